"""From a scan as read to a label map on its own grid, in NumPy only.

Shared by the PyTorch :class:`~hybrid_unet.inference.predictor.Predictor` and the ONNX runner
(:mod:`hybrid_unet.inference.onnx_runner`): they differ only in how an ensemble member turns a
preprocessed image into class probabilities.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.planning import Plan
from hybrid_unet.data.preprocessing import prepare_case, revert_image, revert_preprocessing
from hybrid_unet.inference.postprocessing import keep_largest_component

# A preprocessed image (C, D, H, W) -> one (K, D, H, W) softmax per ensemble member or sample.
Members = Callable[[np.ndarray], Iterable[np.ndarray]]

# How far a scan may lie from the training cases before predict says so: voxel size per axis
# (times the plan's spacing) and field of view (times the median training case's volume).
SPACING_FACTOR = 3.0
VOLUME_FACTOR = 8.0


@dataclass
class Segmentation:
    """A prediction on the scan's own grid.

    Attributes:
        label: ``(D, H, W)`` uint8 label map, post-processed.
        probabilities: ``(K, D, H, W)`` float32 mean softmax, when asked for.
        uncertainty: ``(D, H, W)`` float32 disagreement between members (mutual information,
            nats: the entropy of the mean minus the mean entropy), when asked for.
    """

    label: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=0)


def average_members(
    probabilities: Iterable[np.ndarray], uncertainty: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean softmax of the members and, optionally, their mutual information ``(D, H, W)``."""
    total, entropy, n = None, None, 0
    for p in probabilities:
        total = p.astype(np.float32, copy=True) if total is None else total + p
        if uncertainty:
            entropy = _entropy(p) if entropy is None else entropy + _entropy(p)
        n += 1
    if total is None:
        raise ValueError("no ensemble member produced a prediction")
    mean = total / n
    if not uncertainty:
        return mean, None
    return mean, np.maximum(_entropy(mean) - entropy / n, 0.0).astype(np.float32)


def unlike_training(plan: Plan, spacing: Sequence[float], shape: Sequence[int]) -> str | None:
    """Why a scan is far from what the run trained on, or ``None``.

    Args:
        plan: The run's plan (target spacing, median training case shape at that spacing).
        spacing: The scan's voxel size ``(sd, sh, sw)`` mm.
        shape: The scan's shape after cropping and resampling to ``plan.spacing``.
    """
    notes = []
    ratios = [s / t for s, t in zip(spacing, plan.spacing, strict=True)]
    worst = max(ratios, key=lambda r: max(r, 1 / r))
    if max(worst, 1 / worst) > SPACING_FACTOR:
        how = f"{worst:.1f}x coarser" if worst > 1 else f"{1 / worst:.1f}x finer"
        notes.append(f"its voxels ({_mm(spacing)} mm) are {how} along one axis than the "
                     f"training spacing ({_mm(plan.spacing)} mm)")  # fmt: skip
    if plan.median_shape:
        factor = float(np.prod(shape)) / max(float(np.prod(plan.median_shape)), 1.0)
        if factor > VOLUME_FACTOR:
            median = " x ".join(f"{n:.0f}" for n in plan.median_shape)
            notes.append(f"it covers {factor:.0f}x the volume of the median training case "
                         f"({' x '.join(map(str, shape))} voxels against {median}); expect "
                         "false positives where the training cases had no counterpart")  # fmt: skip
    if not notes:
        return None
    return "unlike the training cases: " + "; ".join(notes)


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{v:g}" for v in values)


def zscore(image: np.ndarray) -> np.ndarray:
    """Per-case z-score, for networks trained without a plan (generated phantoms)."""
    return ((image - image.mean()) / max(float(image.std()), 1e-8)).astype(np.float32)


def segment(
    image: np.ndarray,
    geometry: Geometry,
    plan: Plan | None,
    members: Members,
    largest_component: Sequence[int] = (),
    probabilities: bool = False,
    uncertainty: bool = False,
    connectivity: int = 3,
) -> Segmentation:
    """Preprocess with the run's plan, predict, map back to the scan's grid, post-process.

    Args:
        image: ``(C, D, H, W)`` as read (:func:`hybrid_unet.data.io.read_image`).
        geometry: Its geometry.
        plan: The run's plan (crop, resample, normalise), or ``None``: z-score only.
        members: See :data:`Members`.
        largest_component: Classes reduced to their largest connected component.
        probabilities: Also return the mean softmax on the scan's grid.
        uncertainty: Also return the members' disagreement on the scan's grid.
    """
    if plan is None:
        x, props = zscore(image), None
    else:
        if geometry.assumed:  # resampled to the plan's spacing as if it were 1 mm
            warnings.warn(f"{geometry.source or 'scan'}: stores no voxel spacing, 1 mm assumed "
                          "(a .npy takes it from a case.json sidecar {\"spacing\": [sd, sh, sw]},"
                          " an .npz from a 'spacing' array)", stacklevel=2)  # fmt: skip
        x, _, props = prepare_case(image, None, geometry, plan)
        if note := unlike_training(plan, props["original_spacing"], x.shape[1:]):
            warnings.warn(f"{geometry.source or 'scan'}: {note}", stacklevel=2)
    mean, disagreement = average_members(members(x), uncertainty)
    label = mean.argmax(0).astype(np.uint8)
    if props is not None:
        label = revert_preprocessing(label, props)
    if largest_component:
        label = keep_largest_component(label, largest_component, connectivity)
    out = Segmentation(label)
    if probabilities:
        fill = [1.0] + [0.0] * (mean.shape[0] - 1)  # outside the crop: background
        out.probabilities = mean if props is None else revert_image(mean, props, fill)
    if disagreement is not None:
        d = disagreement[None]
        out.uncertainty = (d if props is None else revert_image(d, props))[0]
    return out
