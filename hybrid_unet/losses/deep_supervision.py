"""Deep supervision: one loss applied to every decoder scale, with nnU-Net's scale weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def deep_supervision_weights(num_scales: int) -> list[float]:
    """nnU-Net's weights: ``1 / 2^i`` for scale ``i`` (0 = highest resolution), the lowest
    resolution set to 0 (its map is too coarse to help), normalised to sum 1.

    One scale gets weight 1.
    """
    if num_scales < 1:
        raise ValueError(f"need at least one scale, got {num_scales}")
    if num_scales == 1:
        return [1.0]
    raw = [1.0 / 2**i for i in range(num_scales)]
    raw[-1] = 0.0
    total = sum(raw)
    return [w / total for w in raw]


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of a label map ``(B, 1, D, H, W)`` to spatial ``size``.

    Output index ``j`` on an axis of length ``n_in`` takes input index ``floor(j n_in / n_out)``
    (``::2`` for a stride of 2). Done by integer indexing, so any label value and dtype
    survive exactly, autocast or not.
    """
    if len(size) != target.ndim - 2:
        raise ValueError(f"size {tuple(size)} does not match target {tuple(target.shape)}")
    out = target
    for axis, n_out in enumerate(size, start=2):
        n_in = target.shape[axis]
        if n_out != n_in:
            idx = torch.arange(n_out, device=target.device) * n_in // n_out
            out = out.index_select(axis, idx)
    return out


class DeepSupervisionLoss(nn.Module):
    """Applies ``loss`` to each output scale against a target resized once per call.

    The trainer wraps the configured loss in this. Parameters of ``loss`` are parameters of
    this module, and ``update()`` / ``log_values()`` are forwarded to it; the components a
    compound loss logs are those of the full-resolution output (so ``loss/dice`` is the Dice
    loss of the prediction, not an unweighted mean over scales).

    Args:
        loss: Any loss ``(logits (B, K, D, H, W), target (B, 1, D, H, W)) -> scalar``.
        weights: Per-scale weights, highest resolution first; normalised to sum 1. ``None``
            uses :func:`deep_supervision_weights` for however many scales arrive.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        if weights is not None:
            w = [float(x) for x in weights]
            if not w or any(x < 0 for x in w) or sum(w) <= 0:
                raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
            weights = [x / sum(w) for x in w]
        self.weights: list[float] | None = weights

    def scale_weights(self, num_scales: int) -> list[float]:
        """Weights used for ``num_scales`` outputs."""
        if self.weights is None:
            return deep_supervision_weights(num_scales)
        if len(self.weights) != num_scales:
            raise ValueError(f"got {num_scales} outputs but {len(self.weights)} weights")
        return self.weights

    def forward(
        self,
        outputs: torch.Tensor | Sequence[torch.Tensor],
        target: torch.Tensor | Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Weighted loss over scales.

        Args:
            outputs: Logits ``(B, K, D, H, W)``, or a list of them, highest resolution first
                (``(B, K, D / s_i, H / s_i, W / s_i)``).
            target: ``(B, 1, D, H, W)`` int64 at full resolution, or a list already matching
                the outputs' sizes (e.g. made by the data loader).

        Returns:
            A scalar tensor. A single tensor output is passed straight to ``loss``.
        """
        if isinstance(outputs, torch.Tensor):
            if not isinstance(target, torch.Tensor):
                raise ValueError("a single output needs a single target tensor")
            return self.loss(outputs, target)
        outputs = list(outputs)
        weights = self.scale_weights(len(outputs))
        if isinstance(target, torch.Tensor):
            targets = [
                downsample_target(target, out.shape[2:]) if w > 0 else None
                for out, w in zip(outputs, weights, strict=True)
            ]
        else:
            targets = list(target)
            if len(targets) != len(outputs):
                raise ValueError(f"got {len(outputs)} outputs but {len(targets)} targets")
        total = None
        recorders = [m for m in self.loss.modules() if hasattr(m, "recording")]
        try:
            for scale, (out, tgt, w) in enumerate(zip(outputs, targets, weights, strict=True)):
                if w == 0:  # the dropped lowest scale costs nothing
                    continue
                for m in recorders:  # logged components: the full-resolution output's
                    m.recording = scale == 0
                term = w * self.loss(out, tgt)
                total = term if total is None else total + term
        finally:
            for m in recorders:
                m.recording = True
        return total

    def update(self, epoch: int, max_epochs: int) -> None:
        """Forwards the epoch hook to the wrapped loss, if it has one."""
        if hasattr(self.loss, "update"):
            self.loss.update(epoch, max_epochs)

    def log_values(self) -> dict[str, float]:
        """The wrapped loss's values (empty if it logs nothing)."""
        return self.loss.log_values() if hasattr(self.loss, "log_values") else {}
