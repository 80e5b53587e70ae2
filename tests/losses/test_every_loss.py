"""Every loss and every conf/loss YAML: finite values and gradients on edge batches and in bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hybrid_unet.losses.deep_supervision import DeepSupervisionLoss
from tests.losses.batches import make_batch

CONF = Path(__file__).resolve().parents[2] / "conf" / "loss"
YAMLS = sorted(CONF.glob("*.yaml"))
EXPECTED = {
    "dice",
    "ce",
    "dice_ce",
    "focal",
    "dice_focal",
    "tversky",
    "focal_tversky",
    "generalized_dice",
    "combined",
    "adaptive_uncertainty",
    "adaptive_schedule",
}
# Values for interpolations a loss YAML may use (``${data.num_classes}`` and the like).
CONTEXT = {"data": {"num_classes": 3, "in_channels": 1, "ignore_index": None}}


def build(path: Path) -> torch.nn.Module:
    cfg = OmegaConf.load(path)
    root = OmegaConf.merge(OmegaConf.create(CONTEXT), {"loss": cfg})
    OmegaConf.resolve(root)
    return instantiate(root.loss)


def test_every_expected_yaml_exists():
    assert {p.stem for p in YAMLS} >= EXPECTED


def _check(loss, logits, target, bf16=False):
    logits = logits.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        x = logits.to(torch.bfloat16) if bf16 else logits
        value = loss(x, target)
    assert value.ndim == 0 and value.dtype == torch.float32
    assert torch.isfinite(value), value
    value.backward()
    assert torch.isfinite(logits.grad).all()
    for p in loss.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    return value


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_yaml_builds_and_is_finite_on_edge_batches(path):
    loss = build(path)
    logits, target = make_batch(b=2, k=3, shape=(4, 4, 4), seed=31)
    _check(loss, logits, target)
    _check(loss, logits, torch.zeros_like(target))  # all background
    _check(loss, logits, torch.full_like(target, 2))  # all one foreground class
    _check(loss, logits * 50, target)  # saturated softmax
    _check(loss, logits, target, bf16=True)
    loss.update(1, 10)
    assert all(isinstance(v, float) for v in loss.log_values().values())


def test_bf16_matches_float32_closely():
    loss = build(CONF / "dice_ce.yaml")
    logits, target = make_batch(seed=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(logits.to(torch.bfloat16), target)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, loss(logits.to(torch.bfloat16).float(), target))


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_yaml_under_deep_supervision_like_the_trainer(path):
    """What the trainer does: wrap, update per epoch, list of scales under bf16, log values."""
    loss = DeepSupervisionLoss(build(path))
    loss.update(0, 5)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8))
    outs = [torch.randn(2, 3, 8 // s, 8 // s, 8 // s, requires_grad=True) for s in (1, 2, 4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss([o.to(torch.bfloat16) for o in outs], target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(outs[0].grad).all()
    logged = loss.log_values()
    assert all(isinstance(v, float) and v == v for v in logged.values())
