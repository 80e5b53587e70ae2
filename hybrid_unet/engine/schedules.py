"""Learning-rate schedules as pure functions of the step, wrapped in ``LambdaLR``.

(:class:`WarmupPlateau` is the exception: the trainer steps it once per validation with the
monitored metric, and calls ``warmup_step()`` after each optimizer step.)
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau


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


def warmup_cosine_factor(
    step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0
) -> float:
    """Multiplier at ``step``: linear warmup, then half a cosine from 1 to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _WarmupCosine:
    """Picklable LR lambda; ``total_steps`` may be reset by the time budget."""

    def __init__(self, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> None:
        self.total_steps, self.warmup_steps, self.min_lr_ratio = (
            total_steps, warmup_steps, min_lr_ratio,
        )  # fmt: skip

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(step, self.total_steps, self.warmup_steps, self.min_lr_ratio)


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 50,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Warmup-cosine schedule, stepped once per optimizer step.

    Args:
        optimizer: The optimizer whose groups' LRs are scaled.
        total_steps: Steps until the LR reaches ``min_lr_ratio * lr``.
        warmup_steps: Steps of linear warmup from ``lr / warmup_steps`` to ``lr``.
        min_lr_ratio: Final LR as a fraction of the base LR, in ``[0, 1]``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    warmup_steps = min(warmup_steps, total_steps - 1)
    return LambdaLR(optimizer, _WarmupCosine(total_steps, warmup_steps, min_lr_ratio))


class WarmupPlateau(ReduceLROnPlateau):
    """Linear warmup per step, then torch's reduce-on-plateau on a validation metric.

    Validations that end before the warmup does are not counted.

    Args:
        optimizer: The optimizer whose groups' LRs are scaled.
        warmup_steps: Steps of linear warmup from ``lr / warmup_steps`` to ``lr``.
        mode: ``max`` when a higher metric is better, ``min`` when lower is.
        factor: LR multiplier applied on a plateau.
        patience: Validations without improvement tolerated before reducing.
        threshold: Smallest improvement that counts (see ``threshold_mode``).
        threshold_mode: ``rel`` or ``abs``, as in ``ReduceLROnPlateau``.
        min_lr: Lower bound of the LR.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        mode: str = "max",
        factor: float = 0.5,
        patience: int = 5,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        min_lr: float = 0.0,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps}")
        super().__init__(optimizer, mode=mode, factor=factor, patience=patience,
                         threshold=threshold, threshold_mode=threshold_mode, min_lr=min_lr)  # fmt: skip
        self.warmup_steps, self.warmup_done = warmup_steps, 0
        self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        self._set_warmup_lr()

    def _set_warmup_lr(self) -> None:
        scale = min((self.warmup_done + 1) / self.warmup_steps, 1.0) if self.warmup_steps else 1.0
        for group, peak in zip(self.optimizer.param_groups, self.peak_lrs, strict=True):
            group["lr"] = peak * scale

    def warmup_step(self) -> None:
        """Called after every optimizer step; a no-op once the warmup is over."""
        if self.warmup_done < self.warmup_steps:
            self.warmup_done += 1
            self._set_warmup_lr()

    def step(self, metrics: float, epoch: int | None = None) -> None:  # type: ignore[override]
        if self.warmup_done >= self.warmup_steps:
            super().step(metrics)
