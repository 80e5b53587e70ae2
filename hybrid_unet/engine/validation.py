"""Validation: whole-case sliding-window prediction and per-class metrics."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from hybrid_unet.engine.checkpoint import atomic_write_text
from hybrid_unet.engine.step import autocast_context
from hybrid_unet.metrics import aggregate, case_metrics


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


# Every combination of flips of the three spatial axes of a (C, D, H, W) array, identity first.
MIRROR_FLIPS = ((), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3))


def predict_case_mirrored(
    model: torch.nn.Module,
    image: np.ndarray,
    patch_size: tuple[int, int, int],
    device: torch.device,
    precision: str = "fp32",
    overlap: float = 0.5,
    sw_batch_size: int = 4,
) -> np.ndarray:
    """:func:`predict_case` averaged over the 8 flips of the image (mirroring test-time
    augmentation, as nnU-Net validates); each prediction is flipped back before averaging."""
    total = None
    for axes in MIRROR_FLIPS:
        flipped = np.flip(image, axes) if axes else image
        probs = predict_case(model, flipped, patch_size, device, precision, overlap, sw_batch_size)
        probs = np.flip(probs, axes) if axes else probs
        total = probs if total is None else total + probs
    return total / len(MIRROR_FLIPS)


def validate(
    model: torch.nn.Module,
    cases: list,
    num_classes: int,
    patch_size: tuple[int, int, int],
    device: torch.device,
    precision: str = "fp32",
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    metrics: tuple[str, ...] = ("dice",),
    tolerance_mm: float = 1.0,
    gather=None,
    mirror: bool = False,
) -> tuple[dict[str, float], list[dict]]:
    """Per-class metrics over whole ``cases``, with the cases' own voxel spacing.

    Returns:
        The summary ``{"dice_1": ..., "hd95_2": ..., "mean_dice": ...}`` and one row per case
        ``{"case": name, "dice_1": ...}``. The summary holds per class and metric the mean over
        cases, and ``mean_<metric>`` over foreground classes; values undefined for a case
        (a class empty in reference and prediction) do not count (see
        :mod:`hybrid_unet.metrics`). ``mirror`` averages over the 8 flips of each case
        (:func:`predict_case_mirrored`, 8x the cost). With ``gather`` (data parallel: each rank holds a share
        of the cases) the per-case metrics of every rank are pooled first.
    """
    was_training = model.training
    model.eval()
    rows = []
    predict = predict_case_mirrored if mirror else predict_case
    for case in cases:
        probs = predict(model, case.image, patch_size, device, precision, overlap, sw_batch_size)
        values = case_metrics(
            probs.argmax(0), case.label, num_classes, case.spacing, metrics, tolerance_mm
        )
        rows.append({"case": case.name, **values})
    model.train(was_training)
    rows = gather(rows) if gather is not None else rows
    return aggregate({k: v for k, v in row.items() if k != "case"} for row in rows), rows


def write_case_table(path: Path, rows: list[dict]) -> Path:
    """Per-case rows as CSV (columns: ``case`` then the metrics, sorted), written atomically."""
    columns = ["case", *sorted({k for row in rows for k in row if k != "case"})]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, out.getvalue())
