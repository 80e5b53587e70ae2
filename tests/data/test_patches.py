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
