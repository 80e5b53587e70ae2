"""Loss weights that change during training: learned (uncertainty) or scheduled by epoch."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from hybrid_unet.losses.compound import WeightedSumLoss, _check_weights

_SCHEDULES = ("linear", "cosine")


class UncertaintyWeightedLoss(WeightedSumLoss):
    """Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Each component ``i`` has a learned log-variance ``s_i`` and the total is
    ``sum_i 0.5 exp(-s_i) L_i + 0.5 s_i``: a noisy term raises its ``s_i`` and is
    down-weighted, and the ``0.5 s_i`` term stops every weight running to 0. The total can be
    negative; that is expected. ``log_vars`` is an ``nn.Parameter``, so the optimizer must see
    this module's parameters (weight decay should be 0 for it). Logs ``weight/<name>``
    (``0.5 exp(-s_i)``) besides the components.

    Args:
        losses: ``{name: loss module}``.
        init_log_vars: Starting ``s_i`` per name; ``None`` starts every ``s_i`` at 0.
    """

    def __init__(
        self,
        losses: Mapping[str, nn.Module],
        init_log_vars: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(losses)
        names = list(self.losses.keys())
        init = dict.fromkeys(names, 0.0) if init_log_vars is None else dict(init_log_vars)
        missing, extra = sorted(set(names) - set(init)), sorted(set(init) - set(names))
        if missing or extra:
            raise ValueError(
                f"init_log_vars must name exactly {sorted(names)}: missing {missing}, "
                f"unknown {extra}"
            )
        self.log_vars = nn.Parameter(torch.tensor([float(init[n]) for n in names]))

    def current_weights(self) -> dict[str, torch.Tensor | float]:
        """``{name: 0.5 exp(-s_i)}`` as tensors that carry gradient to ``log_vars``."""
        w = 0.5 * torch.exp(-self.log_vars)
        return {name: w[i] for i, name in enumerate(self.losses.keys())}

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values = self.components(logits, target)
        weights = self.current_weights()
        total = sum(weights[name] * value for name, value in values.items())
        return total + 0.5 * self.log_vars.sum()

    def log_values(self) -> dict[str, float]:
        """Component means, the current weights as ``weight/<name>``, and nested values."""
        out = super().log_values()
        out.update({f"weight/{k}": float(v.detach()) for k, v in self.current_weights().items()})
        return out


class ScheduledWeightLoss(WeightedSumLoss):
    """Weights moved from ``start_weights`` to ``end_weights`` over training.

    ``update(epoch, max_epochs)`` (called by the trainer at the start of each epoch) sets
    ``t = epoch / (max_epochs - 1)`` clamped to [0, 1] and ``w = start + (end - start) f(t)``
    with ``f(t) = t`` (``"linear"``) or ``(1 - cos(pi t)) / 2`` (``"cosine"``). Before the first
    ``update`` the start weights apply. A typical use goes from cross-entropy-heavy (stable
    early gradients) to Dice-heavy (the metric that counts). Logs ``weight/<name>``.

    Args:
        losses: ``{name: loss module}``.
        start_weights: ``{name: weight >= 0}`` at epoch 0, naming exactly the losses.
        end_weights: ``{name: weight >= 0}`` at the last epoch, naming exactly the losses.
        schedule: ``"linear"`` or ``"cosine"``.
    """

    def __init__(
        self,
        losses: Mapping[str, nn.Module],
        start_weights: Mapping[str, float],
        end_weights: Mapping[str, float],
        schedule: str = "linear",
    ) -> None:
        super().__init__(losses)
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
        names = list(self.losses.keys())
        self.start_weights = _check_weights(names, start_weights, "start_weights")
        self.end_weights = _check_weights(names, end_weights, "end_weights")
        self.schedule = schedule
        self.weights = dict(self.start_weights)

    def current_weights(self) -> dict[str, torch.Tensor | float]:
        return dict(self.weights)

    def update(self, epoch: int, max_epochs: int) -> None:
        """Sets the weights for ``epoch`` (0-based) of ``max_epochs`` and forwards the hook."""
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
        t = min(max(epoch / max(max_epochs - 1, 1), 0.0), 1.0)
        f = t if self.schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * t))
        self.weights = {
            n: self.start_weights[n] + (self.end_weights[n] - self.start_weights[n]) * f
            for n in self.start_weights
        }
        super().update(epoch, max_epochs)

    def log_values(self) -> dict[str, float]:
        """Component means, the current weights as ``weight/<name>``, and nested values."""
        out = super().log_values()
        out.update({f"weight/{k}": float(v) for k, v in self.weights.items()})
        return out
