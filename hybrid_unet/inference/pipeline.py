"""From a scan as read to a label map on its own grid, in NumPy only.

Shared by the PyTorch :class:`~hybrid_unet.inference.predictor.Predictor` and the ONNX runner
(:mod:`hybrid_unet.inference.onnx_runner`): they differ only in how an ensemble member turns a
preprocessed image into class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.planning import Plan
from hybrid_unet.data.preprocessing import prepare_case, revert_image, revert_preprocessing
from hybrid_unet.inference.postprocessing import keep_largest_component

# A preprocessed image (C, D, H, W) -> one (K, D, H, W) softmax per ensemble member or sample.
Members = Callable[[np.ndarray], Iterable[np.ndarray]]


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
        x, _, props = prepare_case(image, None, geometry, plan)
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
