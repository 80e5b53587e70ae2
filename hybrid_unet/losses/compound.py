"""Weighted sums of losses: ``CombinedLoss`` and the usual pairs ``DiceCELoss``, ``DiceFocalLoss``.

A compound loss logs each component's mean (taken over the training calls since the last
``log_values()``; calls in eval mode are not recorded) under the component's name, and forwards
``update()`` and ``log_values()`` to components that implement them (their keys are prefixed
with ``"<name>/"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from hybrid_unet.losses.base import RunningMeans, SegmentationLoss
from hybrid_unet.losses.cross_entropy import CrossEntropyLoss, FocalLoss
from hybrid_unet.losses.dice import SoftDiceLoss


def _check_weights(names: Sequence[str], weights: Mapping[str, float], what: str) -> dict:
    missing = sorted(set(names) - set(weights))
    extra = sorted(set(weights) - set(names))
    if missing or extra:
        raise ValueError(
            f"{what} must name exactly the losses {sorted(names)}: "
            f"missing {missing}, unknown {extra}"
        )
    out = {k: float(weights[k]) for k in names}
    bad = {k: v for k, v in out.items() if v < 0}
    if bad:
        raise ValueError(f"{what} must be >= 0, got {bad}")
    return out


class WeightedSumLoss(SegmentationLoss):
    """Base of the weighted sums: holds named components, records them, forwards the hooks.

    Args:
        losses: ``{name: loss module}``; each takes ``(logits, target)`` and returns a scalar.
    """

    def __init__(self, losses: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not losses:
            raise ValueError("need at least one loss")
        self.losses = nn.ModuleDict(dict(losses.items()))
        self._means = RunningMeans()
        self.recording = True  # deep supervision turns it off for the lower scales

    def current_weights(self) -> dict[str, torch.Tensor | float]:
        """``{name: weight}`` used by the next forward."""
        raise NotImplementedError

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every component's value; recorded for :meth:`log_values` in training mode."""
        values = {name: loss(logits, target) for name, loss in self.losses.items()}
        if self.training and self.recording:
            self._means.add(values.items())
        return values

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values = self.components(logits, target)
        weights = self.current_weights()
        return sum(weights[name] * value for name, value in values.items())

    def update(self, epoch: int, max_epochs: int) -> None:
        """Forwards the trainer's epoch hook to every component that has one."""
        for loss in self.losses.values():
            if hasattr(loss, "update"):
                loss.update(epoch, max_epochs)

    def get_extra_state(self) -> dict:
        return self._means.state_dict()

    def set_extra_state(self, state: dict) -> None:
        self._means.load_state_dict(state)

    def log_values(self) -> dict[str, float]:
        """Component means since the last call, plus the components' own values, prefixed."""
        out = self._means.pop()
        for name, loss in self.losses.items():
            if hasattr(loss, "log_values"):
                out.update({f"{name}/{k}": v for k, v in loss.log_values().items()})
        return out


class CombinedLoss(WeightedSumLoss):
    """Fixed weighted sum ``sum_i w_i L_i`` of any losses, built from YAML with nested targets.

    Args:
        losses: ``{name: loss module}``.
        weights: ``{name: weight >= 0}`` naming exactly the losses; ``None`` weighs each by 1.
    """

    def __init__(
        self, losses: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None
    ) -> None:
        super().__init__(losses)
        names = list(self.losses.keys())
        self.weights = _check_weights(names, weights or dict.fromkeys(names, 1.0), "weights")

    def current_weights(self) -> dict[str, torch.Tensor | float]:
        return dict(self.weights)


class DiceCELoss(CombinedLoss):
    """``dice_weight * SoftDice + ce_weight * CrossEntropy`` (nnU-Net's default loss).

    Without ``class_weights`` it equals ``monai.losses.DiceCELoss(softmax=True,
    to_onehot_y=True, lambda_dice=dice_weight, lambda_ce=ce_weight, smooth_nr=smooth,
    smooth_dr=smooth, ...)``. With them it does not: MONAI's ``weight`` weights the Dice classes
    too, ``class_weights`` only the cross-entropy. Logs ``dice`` and ``ce``.

    Args:
        include_background: Dice scores class 0 too (cross-entropy always covers every class).
        batch_dice: Dice pools the batch before the ratio.
        smooth: Dice smoothing in numerator and denominator.
        dice_weight: Weight of the Dice term, >= 0.
        ce_weight: Weight of the cross-entropy term, >= 0.
        squared: Dice denominator ``sum p^2 + sum g^2``.
        class_weights: Per-class cross-entropy weights ``K`` (background included), or ``None``.
        ignore_index: Label value left out of both terms.
    """

    def __init__(
        self,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1e-5,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        squared: bool = False,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        dice = SoftDiceLoss(
            include_background=include_background,
            batch_dice=batch_dice,
            smooth=smooth,
            squared=squared,
            ignore_index=ignore_index,
        )
        ce = CrossEntropyLoss(weight=class_weights, ignore_index=ignore_index)
        super().__init__({"dice": dice, "ce": ce}, {"dice": dice_weight, "ce": ce_weight})


class DiceFocalLoss(CombinedLoss):
    """``dice_weight * SoftDice + focal_weight * Focal``. Logs ``dice`` and ``focal``.

    Args:
        include_background: Dice scores class 0 too (focal always covers every class).
        batch_dice: Dice pools the batch before the ratio.
        smooth: Dice smoothing in numerator and denominator.
        gamma: Focal exponent.
        alpha: Focal class weighting, see :class:`~hybrid_unet.losses.cross_entropy.FocalLoss`.
        dice_weight: Weight of the Dice term, >= 0.
        focal_weight: Weight of the focal term, >= 0.
        ignore_index: Label value left out of both terms.
    """

    def __init__(
        self,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1e-5,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        dice_weight: float = 1.0,
        focal_weight: float = 1.0,
        ignore_index: int | None = None,
    ) -> None:
        dice = SoftDiceLoss(
            include_background=include_background,
            batch_dice=batch_dice,
            smooth=smooth,
            ignore_index=ignore_index,
        )
        focal = FocalLoss(gamma=gamma, alpha=alpha, ignore_index=ignore_index)
        super().__init__(
            {"dice": dice, "focal": focal}, {"dice": dice_weight, "focal": focal_weight}
        )
