"""Per-case, per-class segmentation metrics (Dice, IoU, precision, recall, HD95, NSD)."""

from hybrid_unet.metrics.segmentation import (
    METRICS,
    aggregate,
    case_metrics,
    confusion_counts,
    dice_per_class,
)

__all__ = ["METRICS", "aggregate", "case_metrics", "confusion_counts", "dice_per_class"]
