"""Segmentation losses: ``loss(logits (B, K, D, H, W), target (B, 1, D, H, W) int64) -> scalar``.

Built from ``conf/loss/*.yaml`` with ``hydra.utils.instantiate``; the trainer wraps the result
in :class:`DeepSupervisionLoss`.
"""

from hybrid_unet.losses.adaptive import ScheduledWeightLoss, UncertaintyWeightedLoss
from hybrid_unet.losses.base import SegmentationLoss
from hybrid_unet.losses.compound import CombinedLoss, DiceCELoss, DiceFocalLoss
from hybrid_unet.losses.cross_entropy import CrossEntropyLoss, FocalLoss
from hybrid_unet.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights
from hybrid_unet.losses.dice import (
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    SoftDiceLoss,
    TverskyLoss,
)

__all__ = [
    "CombinedLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "GeneralizedDiceLoss",
    "ScheduledWeightLoss",
    "SegmentationLoss",
    "SoftDiceLoss",
    "TverskyLoss",
    "UncertaintyWeightedLoss",
    "deep_supervision_weights",
]
