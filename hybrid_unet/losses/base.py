"""Shared plumbing for segmentation losses: input checks, float32 compute, one-hot and masks.

Every loss in this package takes logits ``(B, K, D, H, W)`` (any number of spatial axes) and an
integer target ``(B, 1, D, H, W)`` of class indices, and returns a scalar. ``K`` counts the
background. Inputs may arrive in bfloat16/float16 under autocast; losses compute in float32
with autocast switched off so that sums over a whole patch do not lose precision.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def check_inputs(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raises ``ValueError`` unless ``logits`` is ``(B, K, ...)`` and ``target`` is ``(B, 1, ...)``.

    Args:
        logits: ``(B, K, D, H, W)`` floating point scores.
        target: ``(B, 1, D, H, W)`` integer class indices.
    """
    if not torch.is_floating_point(logits):
        raise ValueError(f"logits must be floating point, got dtype {logits.dtype}")
    if torch.is_floating_point(target):
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if logits.ndim < 3 or target.ndim != logits.ndim:
        raise ValueError(
            f"expected logits (B, K, *spatial) and target (B, 1, *spatial), "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if target.shape[1] != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be (B, 1, *spatial), got {tuple(target.shape)}")
    if target.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"spatial shapes differ: logits {tuple(logits.shape)} vs target {tuple(target.shape)}"
        )
    if logits.shape[1] < 2:
        raise ValueError(f"need K >= 2 classes (background included), got K={logits.shape[1]}")


def valid_mask(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor | None:
    """Float mask ``(B, 1, D, H, W)``, 0 where ``target == ignore_index``; ``None`` if no ignore."""
    if ignore_index is None:
        return None
    return (target != ignore_index).float()


def one_hot(
    target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """One-hot float encoding ``(B, K, D, H, W)`` of ``target`` ``(B, 1, D, H, W)``.

    Voxels labelled ``ignore_index`` become class 0 here; callers zero them with
    :func:`valid_mask`.
    """
    labels = target[:, 0].long()
    if ignore_index is not None:
        labels = torch.where(labels == ignore_index, torch.zeros_like(labels), labels)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)].unique()[:5].tolist()
        raise ValueError(
            f"target holds labels {bad} outside [0, {num_classes}) (ignore_index unset?)"
        )
    out = torch.zeros(
        (labels.shape[0], num_classes, *labels.shape[1:]), dtype=torch.float32, device=labels.device
    )
    return out.scatter_(1, labels.unsqueeze(1), 1.0)


def probs_and_onehot(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and one-hot target, both ``(B, K, D, H, W)`` float32, ignored voxels
    zeroed in both."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = one_hot(target, logits.shape[1], ignore_index)
    mask = valid_mask(target, ignore_index)
    if mask is not None:
        probs = probs * mask
        onehot = onehot * mask
    return probs, onehot


def reduce_axes(ndim: int, batch: bool) -> list[int]:
    """Axes summed for a Dice-like score: spatial axes, plus the batch axis for batch Dice."""
    axes = list(range(2, ndim))
    return [0, *axes] if batch else axes


class SegmentationLoss(nn.Module):
    """Base class: checks inputs, disables autocast and casts logits to float32.

    Subclasses implement :meth:`compute` on float32 logits. The optional hooks of the loss
    contract, :meth:`update` and :meth:`log_values`, default to no-ops.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` ``(B, K, D, H, W)`` against ``target`` ``(B, 1, D, H, W)``.

        Returns:
            A scalar float32 tensor.
        """
        check_inputs(logits, target)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits.float(), target.long())

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss on float32 ``logits`` ``(B, K, ...)`` and int64 ``target`` ``(B, 1, ...)``."""
        raise NotImplementedError

    def update(self, epoch: int, max_epochs: int) -> None:
        """Called by the trainer at the start of every epoch; stateless losses ignore it."""

    def log_values(self) -> dict[str, float]:
        """Values to log once per epoch; none by default."""
        return {}


class RunningMeans:
    """Means of named scalar tensors since the last :meth:`pop`, without a device sync per step.

    Values are kept as detached tensors and turned into floats only in :meth:`pop`.
    """

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, values: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Adds one observation per name."""
        for name, value in values:
            value = value.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value
            self._counts[name] = self._counts.get(name, 0) + 1

    def pop(self) -> dict[str, float]:
        """Returns ``{name: mean}`` and starts afresh."""
        out = {k: float(v) / self._counts[k] for k, v in self._sums.items()}
        self._sums, self._counts = {}, {}
        return out

    def state_dict(self) -> dict:
        """The sums and counts so far: a run stopped mid-epoch logs the same means on resume."""
        return {"sums": dict(self._sums), "counts": dict(self._counts)}

    def load_state_dict(self, state: dict) -> None:
        self._sums, self._counts = dict(state["sums"]), dict(state["counts"])
