"""Image panels for loggers: a middle slice with label and prediction overlays."""

from __future__ import annotations

import numpy as np

# One colour per foreground class (RGB), cycled when there are more classes.
_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230]], dtype=np.float32,
)  # fmt: skip


def overlay(gray: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(H, W)`` intensities in [0, 1] and integer labels -> ``(H, W, 3)`` uint8."""
    rgb = np.repeat(gray[..., None] * 255.0, 3, axis=-1)
    fg = labels > 0
    colours = _COLOURS[(labels[fg] - 1) % len(_COLOURS)]
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * colours
    return rgb.clip(0, 255).astype(np.uint8)


def slice_panel(image: np.ndarray, label: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Middle axial slice: image, label overlay, prediction overlay side by side.

    Args:
        image: ``(C, D, H, W)``; the first channel is shown.
        label: ``(D, H, W)`` or ``(1, D, H, W)`` integer classes.
        prediction: ``(D, H, W)`` integer classes.

    Returns:
        ``(H, 3 * W, 3)`` uint8 (``HWC``).
    """
    label = np.asarray(label).reshape(np.shape(prediction))
    z = _middle(label, prediction)
    gray = np.asarray(image[0, z], dtype=np.float32)
    lo, hi = np.percentile(gray, [0.5, 99.5])
    gray = np.clip((gray - lo) / (hi - lo + 1e-8), 0.0, 1.0)
    blank = np.zeros_like(label[z])
    return np.concatenate(
        [overlay(gray, blank), overlay(gray, label[z]), overlay(gray, prediction[z])], axis=1
    )


def _middle(label: np.ndarray, prediction: np.ndarray) -> int:
    """The middle slice of the foreground (of label or prediction), else of the volume."""
    fg = np.nonzero((label > 0).any(axis=(1, 2)) | (prediction > 0).any(axis=(1, 2)))[0]
    return int(fg[len(fg) // 2]) if len(fg) else label.shape[0] // 2
