"""DeepSupervisionLoss: nnU-Net weights, passthrough, one target resize per scale, hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybrid_unet.losses.compound import DiceCELoss
from hybrid_unet.losses.deep_supervision import (
    DeepSupervisionLoss,
    deep_supervision_weights,
    downsample_target,
)
from tests.losses.batches import make_batch


class _Recorder(nn.Module):
    """Returns the logits' mean and remembers every target shape it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.shapes: list[tuple[int, ...]] = []
        self.epochs: list[tuple[int, int]] = []

    def forward(self, logits, target):
        assert target.dtype == torch.int64
        self.shapes.append(tuple(target.shape))
        return self.scale * logits.mean()

    def update(self, epoch, max_epochs):
        self.epochs.append((epoch, max_epochs))

    def log_values(self):
        return {"x": 1.0}


def test_weights_follow_nnunet():
    # 1, 1/2, 1/4, 0 -> normalised by 1.75
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    assert deep_supervision_weights(2) == pytest.approx([1.0, 0.0])
    assert deep_supervision_weights(1) == [1.0]
    with pytest.raises(ValueError):
        deep_supervision_weights(0)


def test_single_tensor_passes_through():
    logits, target = make_batch()
    inner = DiceCELoss()
    ds = DeepSupervisionLoss(DiceCELoss())
    torch.testing.assert_close(ds(logits, target), inner(logits, target))


def test_list_is_weighted_and_target_resized_per_scale():
    rec = _Recorder()
    ds = DeepSupervisionLoss(rec)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8))
    outs = [
        torch.full((2, 3, 8 // s, 8 // s, 8 // s), float(i + 1)) for i, s in enumerate((1, 2, 4, 8))
    ]
    total = ds(outs, target)
    # means are 1, 2, 3, (4 dropped): 4/7*1 + 2/7*2 + 1/7*3 = 11/7
    assert total.item() == pytest.approx(11 / 7)
    assert rec.shapes == [(2, 1, 8, 8, 8), (2, 1, 4, 4, 4), (2, 1, 2, 2, 2)]


def test_downsample_target_is_nearest_and_keeps_labels():
    target = torch.arange(4 * 4 * 4).view(1, 1, 4, 4, 4)
    small = downsample_target(target, (2, 2, 2))
    assert small.dtype == torch.int64 and small.shape == (1, 1, 2, 2, 2)
    torch.testing.assert_close(small, target[:, :, ::2, ::2, ::2])
    anis = downsample_target(target, (4, 2, 1))
    assert anis.shape == (1, 1, 4, 2, 1)
    assert downsample_target(target, (4, 4, 4)) is target


def test_explicit_weights_are_normalised_and_checked():
    rec = _Recorder()
    ds = DeepSupervisionLoss(rec, weights=[2.0, 2.0])
    outs = [torch.full((1, 2, 4, 4, 4), 1.0), torch.full((1, 2, 2, 2, 2), 3.0)]
    assert ds(outs, torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="weights"):
        ds(outs[:1] * 3, torch.zeros(1, 1, 4, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        DeepSupervisionLoss(rec, weights=[-1.0, 2.0])


def test_precomputed_targets_are_used_as_given():
    rec = _Recorder()
    ds = DeepSupervisionLoss(rec)
    outs = [torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 2, 2, 2), torch.zeros(1, 2, 1, 1, 1)]
    targets = [
        torch.zeros(1, 1, 4, 4, 4, dtype=torch.long),
        torch.zeros(1, 1, 2, 2, 2, dtype=torch.long),
        torch.zeros(1, 1, 1, 1, 1, dtype=torch.long),
    ]
    ds(outs, targets)
    assert rec.shapes == [(1, 1, 4, 4, 4), (1, 1, 2, 2, 2)]


def test_hooks_and_parameters_are_forwarded():
    rec = _Recorder()
    ds = DeepSupervisionLoss(rec)
    ds.update(3, 10)
    assert rec.epochs == [(3, 10)]
    assert ds.log_values() == {"x": 1.0}
    assert [p for p in ds.parameters()] == [rec.scale]
    plain = DeepSupervisionLoss(nn.L1Loss())
    plain.update(0, 1)
    assert plain.log_values() == {}


def test_gradients_reach_every_scale():
    target = torch.randint(0, 3, (2, 1, 8, 8, 8))
    outs = [torch.randn(2, 3, 8 // s, 8 // s, 8 // s, requires_grad=True) for s in (1, 2, 4)]
    DeepSupervisionLoss(DiceCELoss())(outs, target).backward()
    assert outs[0].grad.abs().sum() > 0 and outs[1].grad.abs().sum() > 0
    assert outs[2].grad is None  # the lowest scale has weight 0 and is never evaluated


def test_downsample_target_matches_torch_nearest_and_keeps_large_labels():
    target = torch.randint(0, 3, (2, 1, 9, 7, 8))
    target[0, 0, 0, 0, 0] = 100_000_001  # not exact in float32
    for size in [(5, 4, 4), (3, 7, 2), (9, 7, 8)]:
        ours = downsample_target(target, size)
        ref = torch.nn.functional.interpolate(target.double(), size=size, mode="nearest").long()
        torch.testing.assert_close(ours, ref)
    assert downsample_target(target, (5, 4, 4))[0, 0, 0, 0, 0] == 100_000_001


def test_logged_components_are_the_full_resolution_outputs():
    """``loss/dice`` and ``loss/ce`` are the terms of the prediction itself, not an unweighted
    mean over the scales (which matched neither the full-resolution terms nor the loss)."""
    full, target = make_batch(seed=3)
    half = torch.nn.functional.avg_pool3d(full, 2) + torch.randn(1).item()  # another loss value
    alone = DiceCELoss()
    alone(full, target)
    expected = alone.log_values()
    wrapped = DeepSupervisionLoss(DiceCELoss(), weights=[2, 1])
    wrapped([full, half], target)
    logged = wrapped.log_values()
    assert logged.keys() == expected.keys()
    for name, value in expected.items():
        assert logged[name] == pytest.approx(value, rel=1e-6)
    assert all(m.recording for m in wrapped.modules() if hasattr(m, "recording"))
