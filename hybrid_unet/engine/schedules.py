"""Learning-rate schedules as pure functions of the step, wrapped in ``LambdaLR``."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_poly_factor(step: int, total_steps: int, warmup_steps: int, exponent: float) -> float:
    """Multiplier of the base LR at ``step``: linear warmup, then ``(1 - t)^exponent`` decay."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return (1.0 - progress) ** exponent


class _WarmupPoly:
    """Picklable LR lambda (a closure would not survive ``torch.save`` of the scheduler)."""

    def __init__(self, total_steps: int, warmup_steps: int, exponent: float) -> None:
        self.total_steps, self.warmup_steps, self.exponent = total_steps, warmup_steps, exponent

    def __call__(self, step: int) -> float:
        return warmup_poly_factor(step, self.total_steps, self.warmup_steps, self.exponent)


def warmup_poly(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 50,
    exponent: float = 0.9,
) -> LambdaLR:
    """Warmup-poly schedule, stepped once per optimizer step.

    Args:
        optimizer: The optimizer whose groups' LRs are scaled.
        total_steps: Steps until the LR reaches zero.
        warmup_steps: Steps of linear warmup from ``lr / warmup_steps`` to ``lr``.
        exponent: Poly exponent (nnU-Net uses 0.9).
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps}")
    warmup_steps = min(warmup_steps, total_steps - 1)  # a smoke test of a few steps still runs
    return LambdaLR(optimizer, _WarmupPoly(total_steps, warmup_steps, exponent))
