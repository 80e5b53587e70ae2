"""Voxel-wise cross-entropy and focal loss on softmax logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hybrid_unet.losses.base import SegmentationLoss

# torch's own "no ignore" sentinel; never a valid class index.
_NO_IGNORE = -100


def _class_weights(weights: Sequence[float] | None, name: str) -> torch.Tensor | None:
    if weights is None:
        return None
    w = torch.as_tensor(list(weights), dtype=torch.float32)
    if w.ndim != 1 or (w < 0).any():
        raise ValueError(f"{name} must be a list of non-negative floats, got {list(weights)}")
    return w


def _check_num_classes(w: torch.Tensor | None, num_classes: int, name: str) -> None:
    if w is not None and w.numel() != num_classes:
        raise ValueError(f"{name} has {w.numel()} entries but the logits have K={num_classes}")


class CrossEntropyLoss(SegmentationLoss):
    """Softmax cross-entropy averaged over voxels, as ``torch.nn.CrossEntropyLoss``.

    With class weights the mean is weighted: ``sum_v w[t_v] nll_v / sum_v w[t_v]`` over
    non-ignored voxels. A batch with every voxel ignored gives 0 (not NaN).

    Args:
        weight: One non-negative weight per class ``K`` (background included), or ``None``.
        ignore_index: Label value whose voxels are left out.
    """

    def __init__(
        self, weight: Sequence[float] | None = None, ignore_index: int | None = None
    ) -> None:
        super().__init__()
        self.register_buffer("weight", _class_weights(weight, "weight"), persistent=False)
        self.ignore_index = ignore_index

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_num_classes(self.weight, logits.shape[1], "weight")
        labels = target[:, 0]
        ignore = _NO_IGNORE if self.ignore_index is None else self.ignore_index
        nll = F.cross_entropy(
            logits, labels, weight=self.weight, ignore_index=ignore, reduction="none"
        )
        valid = labels != ignore
        if self.weight is None:
            denom = valid.sum()
        else:
            safe = torch.where(valid, labels, torch.zeros_like(labels))
            denom = (self.weight[safe] * valid).sum()
        return nll.sum() / denom.clamp_min(1e-12)


class FocalLoss(SegmentationLoss):
    """Softmax focal loss (Lin et al. 2017) averaged over non-ignored voxels.

    ``FL_v = -alpha[t_v] (1 - p_{t_v})^gamma log p_{t_v}``; ``gamma = 0`` without ``alpha`` is
    plain cross-entropy. Note the scale: ``monai.losses.FocalLoss(use_softmax=True,
    to_onehot_y=True)`` averages over classes as well as voxels, so without ``ignore_index``
    it equals this loss divided by ``K``.

    Args:
        gamma: Focusing exponent, >= 0.
        alpha: ``None``; a float in [0, 1] giving ``1 - alpha`` to the background and ``alpha``
            to every other class (MONAI's convention); or one weight per class ``K``.
        ignore_index: Label value whose voxels are left out.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if isinstance(alpha, (int, float)) and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"a scalar alpha must lie in [0, 1], got {alpha}")
        self.gamma = float(gamma)
        self.scalar_alpha = float(alpha) if isinstance(alpha, (int, float)) else None
        seq = None if alpha is None or self.scalar_alpha is not None else alpha
        self.register_buffer("alpha", _class_weights(seq, "alpha"), persistent=False)
        self.ignore_index = ignore_index

    def _alpha(self, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
        if self.scalar_alpha is not None:
            a = self.scalar_alpha
            return torch.tensor([1.0 - a] + [a] * (num_classes - 1)).to(like)
        _check_num_classes(self.alpha, num_classes, "alpha")
        return self.alpha

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = target[:, 0]
        valid = labels != self.ignore_index if self.ignore_index is not None else None
        safe = labels if valid is None else torch.where(valid, labels, torch.zeros_like(labels))
        log_pt = torch.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        # The clamp keeps d/dp (1 - p)^gamma finite at p = 1 when gamma < 1.
        loss = -((1.0 - log_pt.exp()).clamp_min(1e-12).pow(self.gamma)) * log_pt
        alpha = self._alpha(logits.shape[1], logits)
        if alpha is not None:
            loss = loss * alpha[safe]
        if valid is None:
            return loss.mean()
        return (loss * valid).sum() / valid.sum().clamp_min(1)
