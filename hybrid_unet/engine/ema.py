"""An exponential moving average of the weights, swapped in for validation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class ModelEMA:
    """``shadow = d * shadow + (1 - d) * weights`` after every optimizer step.

    ``d = min(decay, (1 + step) / (10 + step))`` at optimizer step ``step`` (0-based): a
    warm-up, so the random initial weights do not linger in the average (with a fixed 0.999
    they would still carry 0.999^300 = 74 % of it after 300 steps). Floating-point parameters
    and buffers are averaged; integer buffers (counters) are copied.

    Args:
        model: The bare model (not DDP- or compile-wrapped).
        decay: Weight of the old average, in ``[0, 1)``.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"trainer.ema_decay must be in [0, 1), got {decay}")
        self.model, self.decay = model, decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        """The decay used at optimizer step ``step`` (0-based)."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the weights after optimizer step ``step`` (0-based; the trainer's own
        count, so a resumed run goes on with the same decay)."""
        weight = 1.0 - self.decay_at(step)
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                self.shadow[name].lerp_(value.detach(), weight)
            else:
                self.shadow[name].copy_(value)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; its own come back after."""
        own = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            self.model.load_state_dict(own)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.detach().clone() for k, v in state.items()}
