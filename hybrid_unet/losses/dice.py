"""Soft Dice, Generalized Dice, Tversky and Focal-Tversky losses on softmax probabilities."""

from __future__ import annotations

import torch

from hybrid_unet.losses.base import SegmentationLoss, probs_and_onehot, reduce_axes

_GDL_WEIGHTS = ("square", "simple", "uniform")


def _check_smooth(smooth_nr: float, smooth_dr: float) -> None:
    if smooth_nr < 0 or smooth_dr < 0:
        raise ValueError(
            f"smoothing must be >= 0, got smooth_nr={smooth_nr}, smooth_dr={smooth_dr}"
        )


def _drop_background(
    probs: torch.Tensor, onehot: torch.Tensor, include_background: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if include_background:
        return probs, onehot
    return probs[:, 1:], onehot[:, 1:]


class SoftDiceLoss(SegmentationLoss):
    """``1 - mean over (sample, class) of (2 TP + s_nr) / (|P| + |G| + s_dr)``.

    Soft counts come from the softmax of the logits. Per-sample Dice (``batch_dice=False``)
    scores every (sample, class) pair, so a class absent from a sample scores ~1 loss unless the
    prediction is ~0 there too; batch Dice pools the batch before the ratio (nnU-Net's
    ``batch_dice``). Matches ``monai.losses.DiceLoss(softmax=True, to_onehot_y=True, ...)``.

    Args:
        include_background: Score class 0 too.
        batch_dice: Pool soft counts over the batch axis before the ratio.
        smooth: Added to the numerator, and to the denominator unless ``smooth_dr`` is given.
        smooth_dr: Denominator smoothing; ``None`` uses ``smooth``.
        squared: Denominator ``sum p^2 + sum g^2`` (Milletari's V-Net form) instead of
            ``sum p + sum g``.
        ignore_index: Label value whose voxels are left out of every count.
    """

    def __init__(
        self,
        include_background: bool = True,
        batch_dice: bool = False,
        smooth: float = 1e-5,
        smooth_dr: float | None = None,
        squared: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.smooth_nr = float(smooth)
        self.smooth_dr = float(smooth if smooth_dr is None else smooth_dr)
        _check_smooth(self.smooth_nr, self.smooth_dr)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.squared = squared
        self.ignore_index = ignore_index

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot = probs_and_onehot(logits, target, self.ignore_index)
        probs, onehot = _drop_background(probs, onehot, self.include_background)
        axes = reduce_axes(probs.ndim, self.batch_dice)
        tp = (probs * onehot).sum(axes)
        if self.squared:
            denom = (probs * probs).sum(axes) + (onehot * onehot).sum(axes)
        else:
            denom = probs.sum(axes) + onehot.sum(axes)
        dice = (2.0 * tp + self.smooth_nr) / (denom + self.smooth_dr)
        return 1.0 - dice.mean()


class GeneralizedDiceLoss(SegmentationLoss):
    """Generalized Dice (Sudre et al. 2017): classes weighted by inverse reference volume.

    ``1 - (2 sum_c w_c TP_c + s_nr) / (sum_c w_c (|P_c| + |G_c|) + s_dr)`` per sample (or over
    the batch with ``batch_dice``), averaged over samples. ``w_c = 1 / |G_c|^2`` for
    ``"square"``, ``1 / |G_c|`` for ``"simple"``, 1 for ``"uniform"``; a class empty in the
    reference would get an infinite weight and takes the largest finite weight of its sample
    instead (MONAI's rule). Matches ``monai.losses.GeneralizedDiceLoss(softmax=True,
    to_onehot_y=True, w_type=...)``.

    Args:
        include_background: Score class 0 too.
        batch_dice: Pool counts and weights over the batch.
        smooth: Numerator smoothing, and denominator smoothing unless ``smooth_dr`` is given.
        smooth_dr: Denominator smoothing; ``None`` uses ``smooth``.
        w_type: ``"square"``, ``"simple"`` or ``"uniform"``.
        ignore_index: Label value whose voxels are left out.
    """

    def __init__(
        self,
        include_background: bool = True,
        batch_dice: bool = False,
        smooth: float = 1e-5,
        smooth_dr: float | None = None,
        w_type: str = "square",
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if w_type not in _GDL_WEIGHTS:
            raise ValueError(f"w_type must be one of {_GDL_WEIGHTS}, got {w_type!r}")
        self.smooth_nr = float(smooth)
        self.smooth_dr = float(smooth if smooth_dr is None else smooth_dr)
        _check_smooth(self.smooth_nr, self.smooth_dr)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.w_type = w_type
        self.ignore_index = ignore_index

    def _weights(self, volume: torch.Tensor) -> torch.Tensor:
        if self.w_type == "uniform":
            return torch.ones_like(volume)
        w = 1.0 / (volume * volume if self.w_type == "square" else volume)
        empty = torch.isinf(w)
        w = torch.where(empty, torch.zeros_like(w), w)
        # An empty class would dominate with an infinite weight: give it the largest finite one.
        if self.batch_dice:
            return torch.where(empty, w.max(), w)
        return torch.where(empty, w.amax(dim=1, keepdim=True), w)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot = probs_and_onehot(logits, target, self.ignore_index)
        probs, onehot = _drop_background(probs, onehot, self.include_background)
        axes = reduce_axes(probs.ndim, self.batch_dice)
        tp = (probs * onehot).sum(axes)
        volume = onehot.sum(axes)
        denom = probs.sum(axes) + volume
        w = self._weights(volume)  # (B, C) or (C,); no gradient, built from the target
        class_axis = 0 if self.batch_dice else 1
        numer = 2.0 * (w * tp).sum(class_axis) + self.smooth_nr
        denom = (w * denom).sum(class_axis) + self.smooth_dr
        return 1.0 - (numer / denom).mean()


class TverskyLoss(SegmentationLoss):
    """Tversky loss: ``1 - (TP + s_nr) / (TP + alpha FP + beta FN + s_dr)`` per (sample, class).

    ``alpha = beta = 0.5`` is soft Dice; ``beta > alpha`` penalises misses more (recall-heavy),
    useful for small structures. Matches ``monai.losses.TverskyLoss(softmax=True,
    to_onehot_y=True, ...)``.

    Args:
        alpha: Weight of false positives ``sum p (1 - g)``.
        beta: Weight of false negatives ``sum (1 - p) g``.
        include_background: Score class 0 too.
        batch_dice: Pool counts over the batch before the ratio.
        smooth: Numerator smoothing, and denominator smoothing unless ``smooth_dr`` is given.
        smooth_dr: Denominator smoothing; ``None`` uses ``smooth``.
        ignore_index: Label value whose voxels are left out.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        include_background: bool = True,
        batch_dice: bool = False,
        smooth: float = 1e-5,
        smooth_dr: float | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"need alpha, beta >= 0 and not both 0, got {alpha}, {beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.smooth_nr = float(smooth)
        self.smooth_dr = float(smooth if smooth_dr is None else smooth_dr)
        _check_smooth(self.smooth_nr, self.smooth_dr)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.ignore_index = ignore_index

    def tversky_index(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Tversky index per (sample, class) ``(B, C)``, or per class ``(C,)`` for batch Dice."""
        probs, onehot = probs_and_onehot(logits, target, self.ignore_index)
        probs, onehot = _drop_background(probs, onehot, self.include_background)
        axes = reduce_axes(probs.ndim, self.batch_dice)
        tp = (probs * onehot).sum(axes)
        fp = (probs * (1.0 - onehot)).sum(axes)
        fn = ((1.0 - probs) * onehot).sum(axes)
        denom = tp + self.alpha * fp + self.beta * fn + self.smooth_dr
        return (tp + self.smooth_nr) / denom

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.tversky_index(logits, target).mean()


class FocalTverskyLoss(TverskyLoss):
    """Focal-Tversky loss (Abraham & Khan 2019): ``mean over (sample, class) of (1 - TI)^gamma``.

    ``gamma = 1`` is the Tversky loss. ``gamma < 1`` (the paper's ``1/gamma = 0.75``) raises
    every class's loss, and the gradient ``gamma (1 - TI)^(gamma - 1)`` is steeper the closer a
    class is to right (at TI 0.9 it is 1.6x that at TI 0.3), so training keeps pushing the
    nearly-right classes; ``gamma > 1`` does the opposite and leans on the hard classes.
    ``1 - TI`` is clamped at 1e-6 so that ``gamma < 1`` keeps a finite gradient at a perfect
    prediction.

    Args:
        gamma: Exponent applied to ``1 - TI``; must be > 0.
        alpha, beta, include_background, batch_dice, smooth, smooth_dr, ignore_index: As in
            :class:`TverskyLoss`.
    """

    def __init__(
        self,
        gamma: float = 0.75,
        alpha: float = 0.3,
        beta: float = 0.7,
        include_background: bool = True,
        batch_dice: bool = False,
        smooth: float = 1e-5,
        smooth_dr: float | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(
            alpha, beta, include_background, batch_dice, smooth, smooth_dr, ignore_index
        )
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        distance = (1.0 - self.tversky_index(logits, target)).clamp_min(1e-6)
        return distance.pow(self.gamma).mean()
