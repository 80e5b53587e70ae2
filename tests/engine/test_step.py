"""train_step against plain PyTorch: clipping, the finite check, fresh gradients, the scaler."""

from __future__ import annotations

import math

import pytest
import torch

from hybrid_unet.engine.step import train_step


def _model(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 1)


def _batch(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(6, 3, generator=g) * scale,
        "label": torch.randn(6, 1, generator=g),
    }


def _step(model, batches, grad_clip=None, scaler=None, lr=1.0):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    return train_step(model, torch.nn.MSELoss(), opt, scaler, batches, "fp32", grad_clip)


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_the_step_is_clipped_to_grad_clip_and_reports_the_norm_before_clipping():
    batch = _batch(0, scale=50.0)  # a gradient norm far above the clip
    reference = _model()
    torch.nn.MSELoss()(reference(batch["image"]), batch["label"]).backward()
    full_norm = torch.cat([p.grad.flatten() for p in reference.parameters()]).norm()

    model = _model()
    before = _flat(model)
    result = _step(model, [batch], grad_clip=0.5)  # SGD, lr 1: the update is the gradient
    assert result.grad_norm == pytest.approx(float(full_norm), rel=1e-5) and full_norm > 10
    assert float((_flat(model) - before).norm()) == pytest.approx(0.5, rel=1e-4)

    unclipped = _model()
    _step(unclipped, [batch], grad_clip=None)
    assert float((_flat(unclipped) - before).norm()) == pytest.approx(float(full_norm), rel=1e-4)


def test_a_non_finite_step_changes_no_weight_and_leaves_no_gradient_behind():
    model = _model()
    before = _flat(model)
    nan_batch = {**_batch(1), "image": torch.full((6, 3), float("nan"))}
    result = _step(model, [nan_batch])
    assert result.skipped and not math.isfinite(result.loss)
    torch.testing.assert_close(_flat(model), before, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
    # The next finite step is the step a fresh model takes: nothing of the NaN step remains.
    fresh = _model()
    _step(model, [_batch(2)], lr=0.1)
    _step(fresh, [_batch(2)], lr=0.1)
    torch.testing.assert_close(_flat(model), _flat(fresh), rtol=0, atol=0)


def test_consecutive_steps_start_from_fresh_gradients():
    model, reference = _model(), _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for seed in (3, 4, 5):
        batch = _batch(seed)
        train_step(model, torch.nn.MSELoss(), opt, scaler, [batch], "fp32", None)
        ref_opt.zero_grad()
        torch.nn.MSELoss()(reference(batch["image"]), batch["label"]).backward()
        ref_opt.step()
    torch.testing.assert_close(_flat(model), _flat(reference))


def test_a_loss_scaler_changes_neither_the_clip_nor_the_step():
    """Gradients are unscaled before clipping: the clip and the reported norm are those of the
    true gradient, not of the gradient times the loss scale."""
    batch = _batch(6, scale=20.0)
    plain, scaled = _model(), _model()
    expected = _step(plain, [batch], grad_clip=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, enabled=True)
    result = _step(scaled, [batch], grad_clip=1.0, scaler=scaler)
    assert not result.skipped
    assert result.grad_norm == pytest.approx(expected.grad_norm, rel=1e-5)
    torch.testing.assert_close(_flat(scaled), _flat(plain))


def test_a_scaler_overflow_is_not_a_skipped_step():
    """An fp16 loss scale too large for the gradient: the scaler skips the step and halves its
    scale. That is routine, not a sign of divergence, so it is not counted as skipped."""
    model = _model()
    before = _flat(model).clone()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120, enabled=True)
    result = _step(model, [_batch(7, scale=1e6)], scaler=scaler)
    assert result.overflow and not result.skipped and math.isfinite(result.loss)
    torch.testing.assert_close(_flat(model), before, rtol=0, atol=0)  # the step was skipped
    assert scaler.get_scale() == 2.0**119
