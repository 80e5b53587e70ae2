"""Validation: whole-case sliding-window prediction and per-class Dice."""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from hybrid_unet.engine.step import autocast_context
from hybrid_unet.metrics import dice_per_class


@torch.no_grad()
def predict_case(
    model: torch.nn.Module,
    image: np.ndarray,
    patch_size: tuple[int, int, int],
    device: torch.device,
    precision: str = "fp32",
    overlap: float = 0.5,
    sw_batch_size: int = 4,
) -> np.ndarray:
    """Softmax probabilities ``(K, D, H, W)`` float32 of one image ``(C, D, H, W)``."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).to(device)[None]  # copy: may be mmap
    with autocast_context(precision, device):
        logits = sliding_window_inference(
            x, roi_size=patch_size, sw_batch_size=sw_batch_size, predictor=model,
            overlap=overlap, mode="gaussian",
        )  # fmt: skip
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


def validate(
    model: torch.nn.Module,
    cases: list,
    num_classes: int,
    patch_size: tuple[int, int, int],
    device: torch.device,
    precision: str = "fp32",
    overlap: float = 0.5,
    sw_batch_size: int = 4,
) -> dict[str, float]:
    """Mean per-class Dice over ``cases`` and its mean over foreground classes.

    Returns:
        ``{"dice_1": ..., ..., "mean_dice": ...}``; a class absent from both reference and
        prediction of a case does not count towards that class's mean.
    """
    was_training = model.training
    model.eval()
    per_case = []
    for case in cases:
        probs = predict_case(
            model, case.image, patch_size, device, precision, overlap, sw_batch_size
        )
        per_case.append(dice_per_class(probs.argmax(0), case.label, num_classes))
    model.train(was_training)
    scores = np.array(per_case, dtype=np.float64)  # (cases, K-1), NaN where undefined
    means = np.nanmean(np.where(np.isnan(scores), np.nan, scores), axis=0)
    result = {f"dice_{c + 1}": float(m) for c, m in enumerate(means)}
    result["mean_dice"] = float(np.nanmean(means))
    return result
