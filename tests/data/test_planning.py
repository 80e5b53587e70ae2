"""Automatic planning: spacing, patch, strides, batch, overrides, serialisation, apply_plan."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from hybrid_unet.data.fingerprint import Fingerprint, compute_fingerprint
from hybrid_unet.data.layouts import detect_layout
from hybrid_unet.data.planning import (
    Plan,
    PlanOverrideError,
    apply_plan,
    config_over_plan,
    plan_experiment,
    target_spacing,
)

INTENSITY = [
    {
        "percentile_00_5": -100.0,
        "percentile_50_0": 40.0,
        "percentile_99_5": 300.0,
        "mean": 50.0,
        "std": 80.0,
        "min": -1000.0,
        "max": 2000.0,
    }
]


def _fingerprint(shapes, spacings, modality="MRI") -> Fingerprint:
    return Fingerprint(
        shapes=[list(map(int, s)) for s in shapes],
        spacings=[list(map(float, s)) for s in spacings],
        intensity=INTENSITY,
        class_frequencies={"0": 0.9, "1": 0.1},
        modality={"0": modality},
        num_cases=len(shapes),
    )


def hippocampus_like(n=200) -> Fingerprint:
    rng = np.random.default_rng(0)
    shapes = np.stack(
        [rng.integers(31, 42, n), rng.integers(40, 60, n), rng.integers(24, 47, n)], 1
    )
    shapes[: n // 2] = [36, 50, 35]  # pin the median
    return _fingerprint(shapes, [[1.0, 1.0, 1.0]] * n)


def test_hippocampus_like_plan():
    plan = plan_experiment(hippocampus_like())
    assert plan.spacing == [1.0, 1.0, 1.0]
    assert plan.patch_size == [40, 56, 40]
    assert plan.strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert plan.kernel_sizes == [[3, 3, 3]] * 4
    assert plan.normalization == ["zscore"]
    assert 2 <= plan.batch_size * np.prod(plan.patch_size) <= plan.memory_budget_voxels


def test_anisotropic_spacing_uses_low_percentile_and_skips_pooling():
    spacings = [[5.0, 0.7, 0.7]] * 8 + [[4.0, 0.7, 0.7], [3.0, 0.7, 0.7]]
    assert target_spacing(np.array(spacings)) == pytest.approx([3.9, 0.7, 0.7])
    plan = plan_experiment(_fingerprint([[30, 256, 256]] * 10, spacings, "CT"), 2 * 96**3)
    assert plan.strides[1] == [1, 2, 2]  # the coarse axis is not pooled first
    assert plan.kernel_sizes[0] == [1, 3, 3]
    assert plan.normalization == ["ct"]
    assert all(p % t == 0 for p, t in zip(plan.patch_size, plan.total_stride, strict=True))
    assert 2 * np.prod(plan.patch_size) <= 2 * 96**3


def test_small_budget_shrinks_patch_keeps_divisibility():
    plan = plan_experiment(_fingerprint([[200, 200, 200]] * 3, [[1, 1, 1]] * 3), 2 * 64**3)
    assert np.prod(plan.patch_size) * 2 <= 2 * 64**3
    assert plan.batch_size >= 2
    assert all(p % t == 0 for p, t in zip(plan.patch_size, plan.total_stride, strict=True))


def test_overrides_drive_derived_fields():
    plan = plan_experiment(hippocampus_like(), overrides={"patch_size": [32, 32, 32]})
    assert plan.patch_size == [32, 32, 32] and plan.strides[-1] == [2, 2, 2]
    plan = plan_experiment(hippocampus_like(), overrides={"batch_size": 3, "spacing": [2, 2, 2]})
    assert plan.batch_size == 3 and plan.spacing == [2.0, 2.0, 2.0]
    assert plan.patch_size == [20, 28, 20] and plan.num_stages == 3
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    plan = plan_experiment(hippocampus_like(), overrides={"strides": strides})
    assert plan.strides == strides and len(plan.kernel_sizes) == 3


def test_bad_overrides_fail_with_close_matches():
    with pytest.raises(ValueError, match="patch_size"):
        plan_experiment(hippocampus_like(), overrides={"patch_sise": [32, 32, 32]})
    with pytest.raises(ValueError, match="not divisible"):
        plan_experiment(hippocampus_like(), overrides={"patch_size": [30, 32, 32]})


@pytest.mark.parametrize(
    ("key", "value"),
    [("spacing", [1, 1]), ("spacing", [1, 0, 1]), ("patch_size", [32, 32.5, 32]),
     ("strides", [[1, 2]]), ("kernel_sizes", []), ("axis_order", [0, 0, 1])],
)  # fmt: skip
def test_a_malformed_override_is_named_not_a_numpy_error(key, value):
    # spacing [1, 1] gave "operands could not be broadcast together with shapes (10,3) (2,)"
    with pytest.raises(PlanOverrideError, match=rf"^{key}: ") as info:
        plan_experiment(hippocampus_like(), overrides={key: value})
    assert info.value.key == key


def test_plan_json_round_trip_and_table(tmp_path):
    plan = plan_experiment(hippocampus_like())
    plan.to_json(tmp_path / "plan.json")
    assert Plan.from_json(tmp_path / "plan.json") == plan
    assert "40 x 56 x 40" in plan.table()
    other = plan_experiment(hippocampus_like(), overrides={"batch_size": 2})
    assert other.preprocessing_hash() == plan.preprocessing_hash()


def test_the_plan_keeps_the_axis_order_most_cases_share():
    """Three axial cases and one sagittal case of the same anatomy: the plan takes the axial
    order, and the sagittal case's shape and spacing count in that order (they are transposed
    before training)."""
    axial, sagittal = [2, 1, 0], [0, 2, 1]
    fp = _fingerprint(
        [[20, 40, 30]] * 3 + [[30, 20, 40]], [[3.0, 1.0, 0.8]] * 3 + [[0.8, 3.0, 1.0]]
    )
    fp.axis_orders = [axial] * 3 + [sagittal]
    plan = plan_experiment(fp)
    assert plan.axis_order == axial and plan.spacing == [3.0, 1.0, 0.8]
    assert plan.median_shape == [20.0, 40.0, 30.0]
    assert plan_experiment(fp, overrides={"axis_order": sagittal}).axis_order == sagittal
    # a fingerprint saved before the field: no order, no transposition, the hash as before
    old = plan_experiment(_fingerprint([[20, 40, 30]] * 3, [[3.0, 1.0, 0.8]] * 3))
    assert old.axis_order is None
    assert old.preprocessing_hash() != plan.preprocessing_hash()


def test_apply_plan_fills_only_nulls():
    plan = plan_experiment(hippocampus_like())
    data = OmegaConf.create({"patch_size": None, "batch_size": 4})
    model = OmegaConf.create({"strides": None, "features": [8, 16, 32, 64]})
    OmegaConf.set_struct(data, True)
    assert apply_plan(plan, data, model) == ["data.patch_size", "model.strides"]
    assert data.patch_size == [40, 56, 40] and data.batch_size == 4
    assert model.strides == plan.strides
    with pytest.raises(ValueError, match=r"4 stages.*data\.source\.plan_overrides={strides"):
        apply_plan(plan, {"patch_size": None}, {"strides": None, "features": [8, 16]})


def test_keys_the_config_sets_against_the_plan_are_named():
    """The experiment trains 32x48x32 in batches of 4; the printed plan says 40x56x40 and 7."""
    plan = plan_experiment(hippocampus_like())
    data = {"patch_size": [32, 48, 32], "batch_size": plan.batch_size}
    model = {"strides": [1, 2, 2, 2], "kernel_sizes": 3}  # the plan's, spelled short
    assert config_over_plan(plan, data, model) == ["data.patch_size 32 x 48 x 32"]
    model = {"strides": None, "kernel_sizes": [[1, 3, 3], 3, 3, 3]}
    assert config_over_plan(plan, {"batch_size": 2}, model) == [
        "data.batch_size 2", "model.kernel_sizes [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]"
    ]  # fmt: skip


def test_an_anisotropic_dataset_is_planned_with_as_many_stages_as_the_model_has(tmp_path):
    """3 mm slices plan a fifth stage on their own; with the plan choosing the strides the
    model's four widths cap it, so the default model lists fit without overrides."""
    from hybrid_unet.config.validate import check_config
    from hybrid_unet.engine.build import build_data
    from tests.data.conftest import write_decathlon
    from tests.helpers import compose_config

    root = write_decathlon(tmp_path / "aniso", num_cases=2, shape=(96, 96, 20),
                           spacing=(0.8, 0.8, 3.0))  # fmt: skip
    fingerprint = compute_fingerprint(detect_layout(root).cases)
    assert fingerprint.axis_orders == [[2, 1, 0]] * 2  # NIfTI in RAS order: D, H, W = z, y, x
    alone = plan_experiment(fingerprint)
    assert alone.num_stages == 5 and alone.axis_order == [2, 1, 0]
    cfg = check_config(compose_config([
        "data=hippocampus", f"data.source.root={root}", f"data.source.cache_dir={tmp_path / 'c'}",
        "data.source.num_workers=0", "data.num_folds=2", f"paths.output_dir={tmp_path}",
    ]))  # fmt: skip
    build_data(cfg, tmp_path)
    assert len(cfg["model"]["strides"]) == len(cfg["model"]["features"]) == 4
    assert cfg["model"]["strides"][1][0] == 1  # no pooling along the 3 mm axis first
