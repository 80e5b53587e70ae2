"""Per-case, per-class segmentation metrics on integer label maps, with voxel spacing.

Conventions for classes empty in the reference and/or the prediction (nnU-Net's, and most
challenges'):

* Overlap ratios are ``NaN`` exactly when their denominator is 0 ("0/0 is undefined"):
  Dice and IoU are NaN when the class is empty in both maps, and 0 when it is empty in just
  one. Precision ``TP / (TP + FP)`` is NaN when the prediction is empty; recall
  ``TP / (TP + FN)`` is NaN when the reference is empty.
* HD95 is NaN when both are empty. When exactly one is empty it is the worst case, the
  diagonal of the whole volume in mm, so a missed or hallucinated structure is penalised
  rather than silently left out of the mean. "The volume" is the array scored: the original
  scan in ``evaluate``, the preprocessed (cropped, resampled) case in training's validation,
  so such a case's HD95 differs between ``validation_cases.csv`` and ``evaluate``.
* NSD (normalized surface Dice) is NaN when both are empty and 0 when exactly one is.

NaNs are left out of :func:`aggregate`'s means. Background (class 0) is never reported.
HD95 and NSD use MONAI's surface-distance code (``compute_hausdorff_distance`` with
``percentile=95``: the larger of the two directed 95th percentiles; ``compute_surface_dice``).
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

METRICS = ("dice", "iou", "precision", "recall", "hd95", "nsd")
_SURFACE = ("hd95", "nsd")

ArrayLike = np.ndarray | torch.Tensor


def _check_names(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(names)
    for name in names:
        if name not in METRICS:
            close = difflib.get_close_matches(name, METRICS, n=2)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"unknown metric {name!r}, known: {', '.join(METRICS)}{hint}")
    return names


def _check_maps(pred: ArrayLike, ref: ArrayLike, num_classes: int) -> None:
    if tuple(pred.shape) != tuple(ref.shape):
        raise ValueError(f"pred and ref shapes differ: {tuple(pred.shape)} vs {tuple(ref.shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")


def without_unannotated(
    pred: np.ndarray, ref: np.ndarray, ignore_label: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Both maps with background where ``ref`` holds ``ignore_label`` (voxels nobody annotated,
    nnU-Net's ignore label): there no class gains a true or false positive or a surface."""
    if ignore_label is None:
        return pred, ref
    annotated = ref != ignore_label
    return np.where(annotated, pred, 0), np.where(annotated, ref, 0)


def confusion_counts(
    pred: ArrayLike, ref: ArrayLike, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class true positive, false positive and false negative voxel counts.

    Args:
        pred: Predicted labels ``(D, H, W)`` (any shape), integers in ``[0, K)``.
        ref: Reference labels, same shape as ``pred``.
        num_classes: ``K``, background included.

    Returns:
        ``(tp, fp, fn)``, each an int64 array ``(K,)``.
    """
    _check_maps(pred, ref, num_classes)
    k = num_classes
    if isinstance(pred, torch.Tensor):
        # Counted on the tensor's device; only K*K numbers come back.
        p = pred.reshape(-1).long()
        r = torch.as_tensor(ref, device=pred.device).reshape(-1).long()
        bad = int(((p < 0) | (p >= k) | (r < 0) | (r >= k)).sum())
        joint = torch.bincount(p * k + r, minlength=k * k).cpu().numpy() if bad == 0 else None
    else:
        p = np.asarray(pred).reshape(-1).astype(np.int64)
        r = np.asarray(ref).reshape(-1).astype(np.int64)
        bad = int(((p < 0) | (p >= k) | (r < 0) | (r >= k)).sum())
        joint = np.bincount(p * k + r, minlength=k * k) if bad == 0 else None
    if joint is None:
        raise ValueError(f"{bad} voxels hold labels outside [0, {k})")
    matrix = joint.reshape(k, k)  # [predicted class, reference class]
    tp = np.diag(matrix).astype(np.int64)
    fp = matrix.sum(axis=1) - tp
    fn = matrix.sum(axis=0) - tp
    return tp, fp, fn


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def dice_per_class(pred: ArrayLike, ref: ArrayLike, num_classes: int) -> list[float]:
    """Dice of classes ``1..K-1`` (NaN where both maps lack the class); cheap, no distances.

    Args:
        pred: Predicted labels ``(D, H, W)``, NumPy array or tensor (counted on its device).
        ref: Reference labels, same shape.
        num_classes: ``K``, background included.

    Returns:
        ``K - 1`` floats, class 1 first.
    """
    tp, fp, fn = confusion_counts(pred, ref, num_classes)
    return [_ratio(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]) for c in range(1, num_classes)]


def _surface_metrics(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    spacing: Sequence[float],
    names: Sequence[str],
    tolerance_mm: float,
) -> dict[str, float]:
    """HD95 and/or NSD of one binary pair, with the empty-mask conventions of this module."""
    has_pred, has_ref = bool(pred_mask.any()), bool(ref_mask.any())
    out: dict[str, float] = {}
    if not has_pred and not has_ref:
        return {n: math.nan for n in names}
    if has_pred != has_ref:
        diagonal = math.sqrt(
            sum((n * s) ** 2 for n, s in zip(pred_mask.shape, spacing, strict=True))
        )
        return {n: (diagonal if n == "hd95" else 0.0) for n in names}
    yp = torch.from_numpy(pred_mask)[None, None]
    yr = torch.from_numpy(ref_mask)[None, None]
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about its own internal use of a deprecated argument.
        warnings.filterwarnings(
            "ignore", message=".*always_return_as_numpy", category=FutureWarning
        )
        if "hd95" in names:
            hd = compute_hausdorff_distance(
                yp, yr, include_background=True, percentile=95, spacing=spacing
            )
            out["hd95"] = float(hd[0, 0])
        if "nsd" in names:
            nsd = compute_surface_dice(
                yp, yr, [float(tolerance_mm)], include_background=True, spacing=spacing
            )
            out["nsd"] = float(nsd[0, 0])
    return out


def case_metrics(
    pred: ArrayLike,
    ref: ArrayLike,
    num_classes: int,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    names: Iterable[str] = METRICS,
    tolerance_mm: float = 1.0,
    ignore_label: int | None = None,
) -> dict[str, float]:
    """Metrics of one case for every foreground class.

    Args:
        pred: Predicted labels ``(D, H, W)``, integers in ``[0, K)``.
        ref: Reference labels, same shape.
        num_classes: ``K``, background included.
        spacing: Voxel size in mm per axis, ``(sd, sh, sw)``, in the arrays' axis order.
        names: Any of ``"dice", "iou", "precision", "recall", "hd95", "nsd"``.
        tolerance_mm: NSD tolerance in mm.
        ignore_label: Reference value of unannotated voxels: there both maps count as
            background, so those voxels add no true or false positive and no surface.

    Returns:
        ``{f"{name}_{c}": value}`` for each name and class ``c`` in ``1..K-1``, e.g.
        ``dice_1``, ``hd95_2``; distances in mm. Empty classes follow the module docstring.
    """
    names = _check_names(names)
    _check_maps(pred, ref, num_classes)
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    if isinstance(ref, torch.Tensor):
        ref = ref.detach().cpu().numpy()
    pred, ref = without_unannotated(np.asarray(pred), np.asarray(ref), ignore_label)
    if len(spacing) != pred.ndim or any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be {pred.ndim} positive numbers, got {tuple(spacing)}")
    if tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    tp, fp, fn = confusion_counts(pred, ref, num_classes)
    surface = [n for n in names if n in _SURFACE]
    out: dict[str, float] = {}
    for c in range(1, num_classes):
        values = {
            "dice": _ratio(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]),
            "iou": _ratio(tp[c], tp[c] + fp[c] + fn[c]),
            "precision": _ratio(tp[c], tp[c] + fp[c]),
            "recall": _ratio(tp[c], tp[c] + fn[c]),
        }
        if surface:
            values.update(_surface_metrics(pred == c, ref == c, spacing, surface, tolerance_mm))
        out.update({f"{n}_{c}": values[n] for n in names})
    return out


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def aggregate(cases: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """NaN-aware means over cases, plus means over foreground classes.

    Args:
        cases: Dicts from :func:`case_metrics` (or any ``{f"{name}_{c}": value}`` dicts).

    Returns:
        The mean of every key over the cases where it is not NaN (NaN if it never is), and
        ``mean_{name}`` = the mean over classes of those per-class means (NaNs skipped), e.g.
        ``mean_dice``.
    """
    cases = list(cases)
    keys = sorted({k for case in cases for k in case})
    out = {k: _nanmean([case[k] for case in cases if k in case]) for k in keys}
    by_name: dict[str, list[float]] = {}
    for key, value in out.items():
        name, _, cls = key.rpartition("_")
        if name and cls.isdigit():
            by_name.setdefault(name, []).append(value)
    out.update({f"mean_{name}": _nanmean(vals) for name, vals in by_name.items()})
    return out
