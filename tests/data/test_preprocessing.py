"""Preprocessing cache and the real-dataset case source."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest

from hybrid_unet.atomic import PREFIX
from hybrid_unet.data.errors import DatasetValidationError
from hybrid_unet.data.fingerprint import compute_fingerprint
from hybrid_unet.data.layouts import detect_layout
from hybrid_unet.data.planning import plan_experiment
from hybrid_unet.data.preprocessing import (
    crop_to_nonzero,
    load_preprocessed,
    prepare_case,
    preprocess_dataset,
    resample_image,
    resample_label,
    revert_image,
    revert_preprocessing,
)
from hybrid_unet.data.real import DatasetSource


def test_crop_to_nonzero_keeps_labels():
    image = np.zeros((1, 10, 10, 10), np.float32)
    image[0, 2:5, 3:7, 4:6] = 1
    label = np.zeros((10, 10, 10), np.uint8)
    label[5, 5, 5] = 1
    img, lab, box = crop_to_nonzero(image, label)
    assert box == [[2, 6], [3, 7], [4, 6]]
    assert img.shape == (1, 4, 4, 2) and lab.sum() == 1


def test_resample_label_keeps_classes():
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    label[3:5, 3:5, 3:5] = 2
    out = resample_label(label, (16, 16, 16))
    assert out.shape == (16, 16, 16) and set(np.unique(out)) == {0, 1, 2}
    assert (out == 2).sum() == pytest.approx(8 * (label == 2).sum(), rel=0.3)


def test_preprocess_cache_is_atomic_and_reused(decathlon, tmp_path):
    layout = detect_layout(decathlon)
    plan = plan_experiment(
        compute_fingerprint(layout.cases, layout.modality), overrides={"spacing": [1.0, 2.0, 2.0]}
    )
    out = tmp_path / "cache"
    assert len(preprocess_dataset(layout.cases, plan, out)) == 4
    case = load_preprocessed("case_000", out)
    assert isinstance(case.image, np.memmap) and case.image.dtype == np.float32
    assert case.image.shape[0] == 1 and case.label.shape == case.image.shape[1:]
    assert case.spacing == (1.0, 2.0, 2.0)
    assert abs(float(case.image.mean())) < 1e-3 and float(case.image.std()) == pytest.approx(
        1, abs=1e-3
    )
    assert not list(out.glob(f"{PREFIX}*"))
    # A crash after the arrays but before the marker: the case is redone, nothing else is.
    (out / "case_002.json").unlink()
    (out / "case_002_image.npy").write_bytes(b"half")
    assert preprocess_dataset(layout.cases, plan, out, num_workers=2) == ["case_002"]
    assert load_preprocessed("case_002", out).image.shape[0] == 1


def test_dataset_source_contract(decathlon, tmp_path):
    src = DatasetSource(decathlon, tmp_path / "cache", num_workers=0)
    assert src.case_names() == [f"case_{i:03d}" for i in range(4)]
    assert src.num_classes == 3 and src.in_channels == 1
    case = src.load("case_003")
    assert case.image.ndim == 4 and set(np.unique(case.label)) <= {0, 1, 2}
    assert all(p % t == 0 for p, t in zip(src.plan.patch_size, src.plan.total_stride, strict=True))
    again = DatasetSource(decathlon, tmp_path / "cache", num_workers=0)
    assert again.plan == src.plan and again.preprocessed_dir == src.preprocessed_dir
    assert src.plan.axis_order == [2, 1, 0]
    # A fingerprint cached before the axis orders were measured is measured again: kept, it
    # planned no axis order, and a sagittal scan was predicted transposed.
    fp_path = src.dataset_dir / "fingerprint.json"
    old = json.loads(fp_path.read_text())
    fp_path.write_text(json.dumps({k: v for k, v in old.items() if k != "axis_orders"}))
    third = DatasetSource(decathlon, tmp_path / "cache", num_workers=0)
    assert third.plan == src.plan and json.loads(fp_path.read_text()) == old


def test_dataset_source_validates_first(decathlon, tmp_path):
    (decathlon / "imagesTr" / "case_001.nii.gz").write_bytes(b"")
    with pytest.raises(DatasetValidationError, match=r"case_001\.nii\.gz"):
        DatasetSource(decathlon, tmp_path / "cache", num_workers=0)
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_a_case_file_changed_after_preprocessing_is_validated_again(decathlon, tmp_path):
    """The cache used to key on the file names only: a label map edited after the first run
    (here damaged with an undeclared label) was never read again."""
    first = DatasetSource(decathlon, tmp_path / "cache", num_workers=0)
    label = decathlon / "labelsTr" / "case_002.nii.gz"
    image = nib.load(label)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, image.affine, image.header), label)
    with pytest.raises(DatasetValidationError, match=r"case_002\.nii\.gz"):
        DatasetSource(decathlon, tmp_path / "cache", num_workers=0)
    data[0, 0, 0] = 0  # corrected: preprocessed again, into another folder than the first
    nib.save(nib.Nifti1Image(data, image.affine, image.header), label)
    again = DatasetSource(decathlon, tmp_path / "cache", num_workers=0)
    assert again.dataset_dir != first.dataset_dir and again.plan == first.plan


@pytest.mark.real_data
@pytest.mark.slow
def test_hippocampus_plan_and_cache(real_data, tmp_path):
    src = DatasetSource(real_data / "hippocampus", tmp_path, num_workers=2)
    assert len(src.case_names()) == 200 and src.num_classes == 3
    plan = src.plan
    assert plan.spacing == [1.0, 1.0, 1.0]
    assert plan.patch_size == [40, 56, 40]
    assert plan.strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    case = src.load("hippocampus_001")
    assert case.image.shape[1:] == case.label.shape and case.image.dtype == np.float32


def test_revert_preprocessing_restores_original_grid(tmp_path, decathlon_writer):
    from hybrid_unet.data.io import read_label

    root = decathlon_writer(tmp_path / "aniso", num_cases=2, spacing=(1.0, 1.0, 2.0))
    src = DatasetSource(root, tmp_path / "cache", num_workers=0,
                        plan_overrides={"spacing": [1.0, 1.0, 1.0]})  # fmt: skip
    case = src.load("case_001")
    assert case.label.shape[0] == 16  # 8 slices of 2 mm -> 16 of 1 mm
    restored = revert_preprocessing(case.label, case.properties)
    original, _ = read_label(root / "labelsTr" / "case_001.nii.gz")
    assert restored.shape == original.shape
    assert (restored == original).mean() > 0.97


def test_a_scan_stored_with_reversed_axes_meets_the_network_as_a_ras_one(tmp_path):
    """The same anatomy stored two ways (RAS, and LPS with x and y reversed, as DICOM stores
    it): the same world positions, so the same preprocessed array, and a prediction on it maps
    back onto each stored grid."""
    from hybrid_unet.data.io.geometry import Geometry
    from hybrid_unet.data.planning import Plan

    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 6, 9, 7)).astype(np.float32)
    image[0, 1:4, 2:5, 1:3] += 5.0  # an asymmetric bright block
    # index (d, h, w) -> world (x, y, z) mm: x = 0.8 w, y = 0.9 h, z = 2 d
    ras = np.array([[0, 0, 0.8, 0], [0, 0.9, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    # the same scan with h and w stored reversed: x = 0.8 (6 - w), y = 0.9 (8 - h)
    lps = np.array([[0, 0, -0.8, 4.8], [0, -0.9, 0, 7.2], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    stored = np.flip(image, (2, 3)).copy()
    np.testing.assert_allclose(lps @ [0, 8, 6, 1], ras @ [0, 0, 0, 1], atol=1e-9)  # same point
    plan = Plan(spacing=[2.0, 0.9, 0.8], patch_size=[4, 8, 8], batch_size=1,
                strides=[[1, 1, 1]], kernel_sizes=[[3, 3, 3]], normalization=["zscore"],
                intensity_properties=[{}],
                canonical_directions=True)  # fmt: skip
    a, _, props_a = prepare_case(image, None, Geometry(spacing=(2.0, 0.9, 0.8), affine=ras), plan)
    b, _, props_b = prepare_case(stored, None, Geometry(spacing=(2.0, 0.9, 0.8), affine=lps), plan)
    assert props_a["flipped_axes"] == [] and props_b["flipped_axes"] == [1, 2]
    np.testing.assert_allclose(a, b)
    label = (a[0] > 2).astype(np.uint8)
    np.testing.assert_array_equal(revert_preprocessing(label, props_b),
                                  np.flip(revert_preprocessing(label, props_a), (1, 2)))  # fmt: skip
    maps = np.stack([a[0], -a[0]])
    np.testing.assert_allclose(revert_image(maps, props_b),
                               np.flip(revert_image(maps, props_a), (2, 3)), atol=1e-5)  # fmt: skip
    old = dataclasses.replace(plan, canonical_directions=False)  # a plan saved before the field
    c, _, props_c = prepare_case(stored, None, Geometry(spacing=(2.0, 0.9, 0.8), affine=lps), old)
    assert props_c["flipped_axes"] == [] and not np.allclose(a, c)


def test_a_scan_stored_in_another_axis_order_meets_the_network_as_the_training_scans():
    """A sagittal scan (array axes along x, z, y) of the anatomy a RAS-ordered scan stores
    along z, y, x was only flipped, so the network saw it transposed. It is now transposed to
    the plan's axis order (and flipped), predicted there, and mapped back onto its own grid."""
    from hybrid_unet.data.io.geometry import Geometry
    from hybrid_unet.data.planning import Plan

    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 6, 9, 7)).astype(np.float32)
    image[0, 1:4, 2:5, 1:3] += 5.0
    ras = np.array([[0, 0, 0.8, 0], [0, 0.9, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    # stored as (w, d, h) = (x, z, y) with y reversed: x = 0.8 i, z = 2 j, y = 0.9 (8 - k)
    stored = np.flip(image.transpose(0, 3, 1, 2), 3).copy()
    sagittal = np.array([[0.8, 0, 0, 0], [0, 0, -0.9, 7.2], [0, 2.0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(sagittal @ [3, 2, 8 - 4, 1], ras @ [2, 4, 3, 1])  # same point
    plan = Plan(spacing=[2.0, 0.9, 0.8], patch_size=[4, 8, 8], batch_size=1,
                strides=[[1, 1, 1]], kernel_sizes=[[3, 3, 3]], normalization=["zscore"],
                intensity_properties=[{}], canonical_directions=True,
                axis_order=[2, 1, 0])  # fmt: skip
    geo = Geometry(spacing=(0.8, 2.0, 0.9), affine=sagittal)
    a, _, props_a = prepare_case(image, None, Geometry(spacing=(2.0, 0.9, 0.8), affine=ras), plan)
    b, _, props_b = prepare_case(stored, None, geo, plan)
    assert props_a["transposed_axes"] is None and props_b["transposed_axes"] == [1, 2, 0]
    assert props_b["original_spacing"] == [2.0, 0.9, 0.8]  # in the plan's order
    np.testing.assert_allclose(a, b)
    label = (a[0] > 2).astype(np.uint8)
    back = revert_preprocessing(label, props_b)
    assert back.shape == stored.shape[1:]
    np.testing.assert_array_equal(
        back, np.flip(revert_preprocessing(label, props_a).transpose(2, 0, 1), 2)
    )
    maps = np.stack([a[0], -a[0]])
    np.testing.assert_allclose(revert_image(maps, props_b),
                               np.flip(revert_image(maps, props_a).transpose(0, 3, 1, 2), 3),
                               atol=1e-5)  # fmt: skip
    old = dataclasses.replace(plan, axis_order=None)  # a plan saved before the field
    c, _, props_c = prepare_case(stored, None, geo, old)
    assert props_c["transposed_axes"] is None and c.shape != a.shape  # seen transposed


def test_resample_image_coarse_axis_is_linear():
    image = np.zeros((1, 4, 6, 6), np.float32)
    image[0, 2:] = 1.0  # a step between slices 1 and 2
    cubic = resample_image(image, (8, 6, 6))
    linear = resample_image(image, (8, 6, 6), coarse_axis=0)
    assert linear.shape == cubic.shape == (1, 8, 6, 6)
    assert linear.min() >= 0 and linear.max() <= 1  # no overshoot
    assert cubic.min() < -1e-3  # a cubic spline rings at the step


def test_data_error_from_a_worker_process_names_the_file(tmp_path, decathlon_writer):
    # A DataError raised in a pool process must survive pickling, not break the pool.
    import pickle

    from hybrid_unet.data.errors import DataError

    for error in (DataError("/x.nii.gz", "bad"), DatasetValidationError("/d", ["a", "b"])):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
    root = decathlon_writer(tmp_path / "tiny", num_cases=4)
    layout = detect_layout(root)
    plan = plan_experiment(compute_fingerprint(layout.cases, layout.modality, 0))
    bad = root / "imagesTr" / "case_002.nii.gz"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated after planning, before preprocessing
    with pytest.raises(DataError, match="case_002"):
        preprocess_dataset(layout.cases, plan, tmp_path / "cache", num_workers=2)
