"""Training augmentation: determinism per seed, shapes, dtypes, label integrity, speed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybrid_unet.data.transforms import build_train_transform

OFF = dict.fromkeys(
    ["p_rotate", "p_scale", "p_flip", "p_gamma", "p_brightness", "p_contrast", "p_noise",
     "p_blur", "p_lowres"], 0.0,
)  # fmt: skip


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    label = np.zeros((1, 20, 28, 20), np.uint8)
    label[0, 5:15, 8:20, 5:15] = 1
    label[0, 8:12, 12:16, 8:12] = 2
    image = (rng.normal(size=(2, 20, 28, 20)) + label).astype(np.float32)
    return {"image": image, "label": label}


def test_same_seed_same_output_and_seeds_differ(sample):
    heavy = {k: 1.0 for k in OFF} | {"p_elastic": 1.0, "elastic_magnitude": (5.0, 10.0)}
    t1, t2 = build_train_transform(**heavy), build_train_transform(**heavy)
    a, b = t1(sample, 7), t2(sample, 7)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    c = t1(sample, 8)
    assert not np.array_equal(a["image"], c["image"])
    np.testing.assert_array_equal(t1(sample, 7)["image"], a["image"])  # order does not matter


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_shapes_dtypes_and_labels(sample, kind):
    if kind == "torch":
        sample = {k: torch.from_numpy(v) for k, v in sample.items()}
    t = build_train_transform(**{k: 1.0 for k in OFF})
    for seed in range(3):
        out = t(sample, seed)
        assert type(out["image"]) is type(sample["image"])
        assert tuple(out["image"].shape) == (2, 20, 28, 20)
        assert tuple(out["label"].shape) == (1, 20, 28, 20)
        assert out["image"].dtype == sample["image"].dtype
        assert out["label"].dtype == sample["label"].dtype
        assert set(np.unique(np.asarray(out["label"]))) <= {0, 1, 2}
        assert np.isfinite(np.asarray(out["image"])).all()


def test_all_off_is_identity_and_flip_flips(sample):
    out = build_train_transform(**OFF)(sample, 0)
    np.testing.assert_array_equal(out["image"], sample["image"])
    flip = build_train_transform(**(OFF | {"p_flip": 1.0, "flip_axes": (0,)}))(sample, 0)
    np.testing.assert_array_equal(flip["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(flip["label"], sample["label"][:, ::-1])


def test_unit_scale_is_identity_and_zoom_enlarges(sample):
    same = build_train_transform(**(OFF | {"p_scale": 1.0, "scale_range": (1.0, 1.0)}))
    np.testing.assert_allclose(same(sample, 0)["image"], sample["image"], atol=1e-4)
    zoom = build_train_transform(**(OFF | {"p_scale": 1.0, "scale_range": (1.3, 1.3)}))
    assert (zoom(sample, 0)["label"] > 0).sum() > (sample["label"] > 0).sum()


def test_rotation_keeps_label_inside_and_roughly_its_volume(sample):
    t = build_train_transform(**(OFF | {"p_rotate": 1.0, "rotate_range": 20.0}))
    out = t(sample, 3)["label"]
    ratio = (out == 1).sum() / (sample["label"] == 1).sum()
    assert 0.8 < ratio < 1.2
    assert not np.array_equal(out, sample["label"])


def test_bad_probability_is_rejected():
    with pytest.raises(ValueError, match="p_noise"):
        build_train_transform(p_noise=1.5)


def test_runs_on_one_thread_and_restores_the_callers(sample):
    # With data.num_workers=0 the transform runs in the trainer's process; its small ops are
    # much slower split across threads (see docs/benchmarks.md, "Data loading").
    t = build_train_transform()
    seen = []
    t.compose.transforms = (
        *t.compose.transforms,
        lambda d: seen.append(torch.get_num_threads()) or d,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        t(sample, 0)
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_trained_flip_axes_from_the_augmentation_config():
    from hybrid_unet.data.transforms import trained_flip_axes, untrained_mirror_axes

    target = {"_target_": "hybrid_unet.data.transforms.build_train_transform"}
    assert trained_flip_axes(None) == ()
    assert trained_flip_axes(target) == (0, 1, 2)  # build_train_transform's defaults
    assert trained_flip_axes({**target, "p_flip": 0.0}) == ()
    assert trained_flip_axes({**target, "flip_axes": [2, 1]}) == (1, 2)
    assert trained_flip_axes({"_target_": "my.own.transform"}) is None
    assert untrained_mirror_axes([0, 1, 2], {**target, "flip_axes": [2]}) == [0, 1]
    assert untrained_mirror_axes([0, 1, 2], {"_target_": "my.own.transform"}) == []


def test_validated_mirror_axes_follow_val_mirror_and_the_trained_flips():
    from hybrid_unet.data.transforms import validated_mirror_axes

    def run(trainer, augmentation):
        return {"trainer": trainer, "data": {"augmentation": augmentation}}

    flips = {"_target_": "hybrid_unet.data.transforms.build_train_transform", "flip_axes": [2, 1]}
    assert validated_mirror_axes(run({"val_mirror": True}, flips)) == (1, 2)
    assert validated_mirror_axes(run({"val_mirror": False}, flips)) == ()
    assert validated_mirror_axes(run({}, flips)) == ()  # a run from before val_mirror
    assert validated_mirror_axes(run({"val_mirror": True}, {"_target_": "my.own"})) == (0, 1, 2)


def test_thick_slices_are_rotated_and_scaled_in_plane_only():
    """With 5 mm slices (axis D) a rotation that tilts the slices would pull image and label
    from slices far outside the patch: only in-plane rotation and scaling are drawn."""
    slab = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None], (12, 24, 20))
    sample = {"image": slab[None].copy(), "label": (slab[None] % 3).astype(np.uint8)}
    moved = OFF | {"p_rotate": 1.0, "p_scale": 1.0, "rotate_range": 30.0}
    thick = build_train_transform(**moved, spacing=(5.0, 0.8, 0.8))
    iso = build_train_transform(**moved, spacing=(1.0, 1.0, 1.0))
    for seed in range(4):  # each slice stays itself: constant, with its own value and label
        out = thick(sample, seed)
        np.testing.assert_allclose(out["image"], sample["image"], atol=1e-4)
        np.testing.assert_array_equal(out["label"][:, 2:-2, 2:-2, 2:-2],
                                      sample["label"][:, 2:-2, 2:-2, 2:-2])  # fmt: skip
    assert any(not np.allclose(iso(sample, s)["image"], sample["image"]) for s in range(4))
    coarse_w = build_train_transform(**moved, spacing=(0.8, 0.8, 4.0)).compose.transforms[0]
    assert coarse_w.coarse_axis == 2


def test_the_trainer_hands_the_plans_spacing_to_the_augmentation():
    from hybrid_unet.engine.build import build_augmentation

    node = {"_target_": "hybrid_unet.data.transforms.build_train_transform", "p_rotate": 1.0}
    rotate = build_augmentation(node, {"spacing": [5.0, 0.8, 0.8]}).compose.transforms[0]
    assert rotate.coarse_axis == 0
    assert build_augmentation(node, None).compose.transforms[0].coarse_axis is None  # phantoms
    assert build_augmentation(None, {"spacing": [5.0, 0.8, 0.8]}) is None


def test_uncovered_corners_repeat_the_border_in_image_and_label_alike():
    """Without context a rotation uncovers corners: the image repeats its border there, and the
    label must repeat the same voxels (it was zero-padded: foreground intensity, background
    label)."""
    label = np.zeros((1, 16, 16, 16), np.uint8)
    label[0, :, :, :8] = 1  # foreground up to the patch's edge
    sample = {"image": label.astype(np.float32), "label": label}
    t = build_train_transform(**(OFF | {"p_rotate": 1.0, "rotate_range": 45.0}))
    for seed in range(5):
        out = t(sample, seed)
        disagree = (out["image"] > 0.5) != (out["label"] > 0)
        assert disagree.mean() < 0.01, seed
