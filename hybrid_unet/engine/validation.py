"""Validation: whole-case sliding-window prediction and per-class metrics."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from hybrid_unet.atomic import atomic_write_text
from hybrid_unet.inference.sliding_window import SlidingWindow, softmax
from hybrid_unet.inference.torch_forward import torch_forward
from hybrid_unet.metrics import aggregate, case_metrics


def predict_case(
    model: torch.nn.Module,
    image: np.ndarray,
    num_classes: int,
    patch_size: tuple[int, int, int],
    device: torch.device,
    precision: str = "fp32",
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    mirror_axes: tuple[int, ...] = (),
) -> np.ndarray:
    """Softmax probabilities ``(K, D, H, W)`` float32 of one image ``(C, D, H, W)``.

    The windows are placed and weighted exactly as ``python -m hybrid_unet.predict`` places
    them (:class:`SlidingWindow`), so validation scores what prediction will produce.
    ``mirror_axes`` averages the logits of every flip of each window along those spatial axes
    (nnU-Net's mirroring; ``2 ** len(mirror_axes)`` times the cost).
    """
    window = SlidingWindow(list(patch_size), overlap, sw_batch_size, list(mirror_axes))
    image = np.asarray(image, dtype=np.float32)  # may be a memory map
    logits = window(image, torch_forward(model, device, precision), num_classes, patch_size)
    return softmax(logits, inplace=True)


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
    mirror_axes: tuple[int, ...] = (),
    ignore_label: int | None = None,
    score_reference: bool = False,
) -> tuple[dict[str, float], list[dict]]:
    """Per-class metrics over whole ``cases``, with the cases' own voxel spacing.

    Returns:
        The summary ``{"dice_1": ..., "hd95_2": ..., "mean_dice": ...}`` and one row per case
        ``{"case": name, "dice_1": ...}``. The summary holds per class and metric the mean over
        cases, and ``mean_<metric>`` over foreground classes; values undefined for a case
        (a class empty in reference and prediction) do not count (see
        :mod:`hybrid_unet.metrics`). ``mirror_axes`` averages over the flips of each window
        along those axes (:func:`predict_case`). With ``gather`` (data parallel: each rank
        holds a share of the cases) the per-case metrics of every rank are pooled first.
        Voxels labelled ``ignore_label`` (unannotated) count for no class.
        ``score_reference`` scores each reference against itself after running the network
        anyway: a validation that costs what a trained network's does (an untrained one's
        scattered masks make the surface metrics up to twice as slow), for timing it.
    """
    was_training = model.training
    model.eval()
    rows = []
    for case in cases:
        probs = predict_case(model, case.image, num_classes, patch_size, device, precision,
                             overlap, sw_batch_size, mirror_axes)  # fmt: skip
        pred = case.label if score_reference else probs.argmax(0)
        values = case_metrics(pred, case.label, num_classes, case.spacing, metrics,
                              tolerance_mm, ignore_label)  # fmt: skip
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
