"""Patch sampling: shapes, padding, foreground oversampling, order fixed by the item index."""

from __future__ import annotations

import numpy as np
import torch

from hybrid_unet.data.patches import PatchDataset, crop_patch
from hybrid_unet.data.synthetic import PhantomSource


def test_crop_pads_outside_the_volume():
    volume = np.arange(27, dtype=np.float32).reshape(1, 3, 3, 3)
    patch = crop_patch(volume, (-1, 0, 1), (4, 3, 3), fill=-5)
    assert patch.shape == (1, 4, 3, 3)
    assert (patch[0, 0] == -5).all()  # the first slice lies before the volume
    np.testing.assert_array_equal(patch[0, 1:, :, :2], volume[0, :, :, 1:])
    assert (patch[0, :, :, 2] == -5).all()


def _dataset(**kw):
    source = PhantomSource(num_cases=4, shape=(24, 24, 24), num_classes=3, seed=0)
    args = {"patch_size": (16, 16, 16), "batch_size": 3, "oversample_foreground": 1 / 3, "seed": 7}
    return PatchDataset(source, source.case_names(), **{**args, **kw})


def test_items_depend_only_on_seed_and_index():
    a, b = _dataset(), _dataset()
    for index in (0, 5, 1234):
        x, y = a[index], b[index]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    assert not torch.equal(a[0]["image"], a[1]["image"])
    assert not torch.equal(a[0]["image"], _dataset(seed=8)[0]["image"])


def test_item_layout_and_types():
    item = _dataset(patch_size=(32, 16, 16))[0]  # larger than the volume along D: padded
    assert item["image"].shape == (1, 32, 16, 16) and item["image"].dtype == torch.float32
    assert item["label"].shape == (1, 32, 16, 16) and item["label"].dtype == torch.int64


def test_last_third_of_each_batch_holds_foreground():
    data = _dataset(patch_size=(8, 8, 8))
    forced = [data[i]["label"].max().item() > 0 for i in range(2, 60, 3)]
    assert all(forced)


def test_transform_gets_a_per_item_seed():
    seen = []

    def transform(sample, seed):
        seen.append(seed)
        return sample

    data = _dataset(transform=transform)
    data[3], data[3], data[4]
    assert seen[0] == seen[1] != seen[2]


def test_a_context_taking_transform_gets_crops_centred_on_the_patch():
    seen = []

    def transform(sample, seed):
        image, label = sample.pop("context")((14, 12, 10))  # 2 voxels more each side along W
        seen.append((sample["image"], image, sample["label"], label))
        return sample

    transform.takes_context = True
    item = _dataset(transform=transform, patch_size=(10, 8, 6))[1]
    patch, region, patch_label, region_label = seen[0]
    assert region.shape == (1, 14, 12, 10) and region_label.shape == (1, 14, 12, 10)
    np.testing.assert_array_equal(region[:, 2:-2, 2:-2, 2:-2], patch)
    np.testing.assert_array_equal(region_label[:, 2:-2, 2:-2, 2:-2], patch_label)
    assert item["image"].shape == (1, 10, 8, 6)


def test_scaling_fills_the_patch_from_the_case_not_from_padding():
    """Shrinking the content 2x makes a 9-voxel patch show 17 voxels of the case: voxel i of
    the output is voxel 2i of the case region around it (exact at voxel centres). Without the
    context the outer half would repeat the patch's border."""
    from hybrid_unet.data.transforms import build_train_transform

    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 40, 40, 40)).astype(np.float32)
    label = (image > 0.5).astype(np.uint8)
    start, size = (12, 14, 10), (9, 9, 9)
    off = dict.fromkeys(["p_rotate", "p_flip", "p_gamma", "p_brightness", "p_contrast",
                         "p_noise", "p_blur", "p_lowres"], 0.0)  # fmt: skip
    shrink = build_train_transform(**off, p_scale=1.0, scale_range=(0.5, 0.5))

    def context(region):
        corner = [s - (n - p) // 2 for s, n, p in zip(start, region, size, strict=True)]
        return crop_patch(image, corner, region), crop_patch(label, corner, region)

    sample = {"image": crop_patch(image, start, size), "label": crop_patch(label, start, size)}
    out = shrink({**sample, "context": context}, 0)
    box = tuple(slice(s - 4, s + 13, 2) for s in start)  # the patch centre is start + 4
    np.testing.assert_allclose(out["image"], image[(slice(None), *box)], atol=1e-5)
    np.testing.assert_array_equal(out["label"], label[(slice(None), *box)])
    assert "context" not in out
    alone = shrink(sample, 0)  # no context: the outer voxels repeat the patch's border
    np.testing.assert_allclose(alone["image"][:, 0, 0, 0], sample["image"][:, 0, 0, 0], atol=1e-5)
    assert alone["label"][0, 0, 0, 0] == sample["label"][0, 0, 0, 0]
