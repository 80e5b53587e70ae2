"""case_metrics, dice_per_class and aggregate: hand-computed volumes and agreement with MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
    get_confusion_matrix,
)
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric

from hybrid_unet.metrics import aggregate, case_metrics, confusion_counts, dice_per_class

# MONAI's own calls below warn about MONAI's internal use of a deprecated argument.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def _cube_pair(shape=(10, 10, 10)):
    """A 4^3 reference cube of class 1 and the same cube shifted by one voxel along D."""
    ref = np.zeros(shape, dtype=np.int64)
    ref[2:6, 2:6, 2:6] = 1
    pred = np.zeros_like(ref)
    pred[3:7, 2:6, 2:6] = 1
    return pred, ref


def test_shifted_cube_by_hand():
    # TP = 3*16 = 48 of 64 voxels each: Dice 96/128, IoU 48/80. Surface: 56 edge voxels per
    # cube; 20 of them (the far face and the 2x2 centre of the near face) lie 1 voxel from
    # the other surface, the rest on it, so HD95 = 1 and NSD(1 mm) = 1, NSD(0.5 mm) = 72/112.
    pred, ref = _cube_pair()
    m = case_metrics(pred, ref, num_classes=2, spacing=(1.0, 1.0, 1.0))
    assert m["dice_1"] == pytest.approx(0.75)
    assert m["iou_1"] == pytest.approx(0.6)
    assert m["precision_1"] == pytest.approx(0.75) and m["recall_1"] == pytest.approx(0.75)
    assert m["hd95_1"] == pytest.approx(1.0)
    assert m["nsd_1"] == pytest.approx(1.0)
    half = case_metrics(pred, ref, 2, (1.0, 1.0, 1.0), names=["nsd"], tolerance_mm=0.5)
    assert half == {"nsd_1": pytest.approx(72 / 112)}


def test_anisotropic_spacing_changes_distances_only():
    # 3 mm along D: the 16 far-face voxels are now 3 mm away, the 4 centre ones still 1 mm
    # (sideways, in plane). 16/56 > 5%, so HD95 = 3 mm; NSD(1 mm) = 2*(56-16)/112.
    pred, ref = _cube_pair()
    m = case_metrics(pred, ref, 2, spacing=(3.0, 1.0, 1.0), tolerance_mm=1.0)
    assert m["dice_1"] == pytest.approx(0.75)
    assert m["hd95_1"] == pytest.approx(3.0)
    assert m["nsd_1"] == pytest.approx(80 / 112)
    # The same shift along W at 3 mm in D changes nothing: the shift is 1 mm there.
    ref_w = np.moveaxis(ref, 0, 2)
    pred_w = np.moveaxis(pred, 0, 2)
    m_w = case_metrics(pred_w, ref_w, 2, spacing=(3.0, 1.0, 1.0))
    assert m_w["hd95_1"] == pytest.approx(1.0) and m_w["nsd_1"] == pytest.approx(1.0)


def test_empty_prediction_reference_and_both():
    shape = (6, 7, 8)
    spacing = (2.0, 1.0, 0.5)
    diagonal = math.sqrt(12.0**2 + 7.0**2 + 4.0**2)
    ref = np.zeros(shape, dtype=np.int64)
    ref[1:3, 1:3, 1:3] = 1
    empty = np.zeros_like(ref)

    missed = case_metrics(empty, ref, 3, spacing)  # class 1 missed, class 2 absent in both
    assert missed["dice_1"] == 0.0 and missed["iou_1"] == 0.0 and missed["recall_1"] == 0.0
    assert math.isnan(missed["precision_1"])
    assert missed["hd95_1"] == pytest.approx(diagonal) and missed["nsd_1"] == 0.0
    assert all(
        math.isnan(missed[f"{n}_2"]) for n in ("dice", "iou", "precision", "recall", "hd95", "nsd")
    )

    hallucinated = case_metrics(ref, empty, 3, spacing)
    assert hallucinated["dice_1"] == 0.0 and hallucinated["precision_1"] == 0.0
    assert math.isnan(hallucinated["recall_1"])
    assert hallucinated["hd95_1"] == pytest.approx(diagonal) and hallucinated["nsd_1"] == 0.0


def test_perfect_prediction():
    _, ref = _cube_pair()
    m = case_metrics(ref, ref, 2, (1.0, 2.0, 1.0))
    assert m == {
        "dice_1": 1.0,
        "iou_1": 1.0,
        "precision_1": 1.0,
        "recall_1": 1.0,
        "hd95_1": 0.0,
        "nsd_1": 1.0,
    }


def _blobs(seed: int, shape=(12, 14, 10), k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two random label maps made of a few boxes, every class present in both."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(2):
        lab = np.zeros(shape, dtype=np.int64)
        for c in range(1, k):
            for _ in range(2):
                lo = [rng.integers(0, s - 4) for s in shape]
                size = [rng.integers(2, 5) for _ in shape]
                lab[tuple(slice(a, a + b) for a, b in zip(lo, size, strict=True))] = c
        maps.append(lab)
    return maps[0], maps[1]


def _onehot(lab: np.ndarray, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(lab), k).movedim(-1, 0)[None].float()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai_on_random_volumes(seed):
    k, spacing, tol = 3, (2.0, 0.8, 1.2), 1.5
    pred, ref = _blobs(seed, k=k)
    ours = case_metrics(pred, ref, k, spacing, tolerance_mm=tol)
    yp, yr = _onehot(pred, k), _onehot(ref, k)
    cm = get_confusion_matrix(yp, yr, include_background=False)
    expected = {
        "dice": compute_dice(yp, yr, include_background=False),
        "iou": compute_iou(yp, yr, include_background=False),
        "precision": compute_confusion_matrix_metric("precision", cm),
        "recall": compute_confusion_matrix_metric("recall", cm),
        "hd95": compute_hausdorff_distance(yp, yr, percentile=95, spacing=list(spacing)),
        "nsd": compute_surface_dice(yp, yr, [tol] * (k - 1), spacing=list(spacing)),
    }
    for name, values in expected.items():
        for c in range(1, k):
            assert ours[f"{name}_{c}"] == pytest.approx(float(values[0, c - 1]), abs=1e-5), name


def test_dice_per_class_matches_case_metrics_and_takes_tensors():
    pred, ref = _blobs(3, k=4)
    pred[pred == 3] = 0
    ref[ref == 3] = 0  # class 3 empty in both -> NaN
    fast = dice_per_class(pred, ref, 4)
    full = case_metrics(pred, ref, 4, names=["dice"])
    assert fast[:2] == pytest.approx([full["dice_1"], full["dice_2"]])
    assert math.isnan(fast[2]) and math.isnan(full["dice_3"])
    from_tensor = dice_per_class(torch.from_numpy(pred), torch.from_numpy(ref), 4)
    assert from_tensor[:2] == pytest.approx(fast[:2]) and math.isnan(from_tensor[2])


def test_confusion_counts_by_hand():
    pred = np.array([0, 1, 1, 2, 2, 2])
    ref = np.array([0, 1, 2, 2, 2, 0])
    tp, fp, fn = confusion_counts(pred, ref, 3)
    assert tp.tolist() == [1, 1, 2] and fp.tolist() == [0, 1, 1] and fn.tolist() == [1, 0, 1]


def test_aggregate_is_nan_aware():
    cases = [
        {"dice_1": 0.5, "dice_2": math.nan, "hd95_1": 2.0},
        {"dice_1": 1.0, "dice_2": 0.25, "hd95_1": math.nan},
        {"dice_1": math.nan, "dice_2": math.nan, "hd95_1": math.nan},
    ]
    out = aggregate(cases)
    assert out["dice_1"] == pytest.approx(0.75) and out["dice_2"] == pytest.approx(0.25)
    assert out["hd95_1"] == pytest.approx(2.0)
    assert out["mean_dice"] == pytest.approx(0.5) and out["mean_hd95"] == pytest.approx(2.0)
    assert math.isnan(aggregate([{"dice_1": math.nan}])["mean_dice"])
    assert aggregate([]) == {}


def test_bad_inputs_fail_clearly():
    pred, ref = _cube_pair()
    with pytest.raises(ValueError, match="did you mean 'hd95'"):
        case_metrics(pred, ref, 2, names=["hd96"])
    with pytest.raises(ValueError, match="shapes differ"):
        case_metrics(pred[:-1], ref, 2)
    with pytest.raises(ValueError, match="outside"):
        case_metrics(pred + 2, ref, 2)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(pred, ref, 2, spacing=(1.0, 1.0))
