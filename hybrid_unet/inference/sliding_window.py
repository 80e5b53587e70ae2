"""Sliding-window prediction with Gaussian importance weighting, in NumPy only.

The network is any callable from a batch of windows ``(N, C, d, h, w)`` float32 to logits
``(N, K, d, h, w)``: a PyTorch module wrapped by :class:`~hybrid_unet.inference.predictor.
Predictor` or an ONNX Runtime session in :mod:`hybrid_unet.inference.onnx_runner`. Both thus
stitch identically, and the ONNX runner needs no torch.

Windows are placed as nnU-Net places them: per axis ``ceil((size - patch) / step) + 1``
windows, ``step = patch * (1 - overlap)``, spread evenly from the first voxel to the last.
Mirrored copies of each window (test-time augmentation) go through the network in the same
batch as the window itself, and their logits are flipped back and averaged before stitching.
Inside :func:`report_progress` (``predict`` and the ONNX runner, per case), a pass over many
windows reports its progress on stderr.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]

# Progress of a long pass (a CT resampled to 500x410x410 is ~1900 windows, minutes on a CPU):
# a bar on a terminal, else a line every PROGRESS_EVERY_S seconds; only inside report_progress.
PROGRESS_MIN_WINDOWS = 200
PROGRESS_EVERY_S = 30.0
_clock = time.monotonic
_progress_case: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sliding_window_case", default=None
)


@contextlib.contextmanager
def report_progress(case: str) -> Iterator[None]:
    """Within the block, a sliding-window pass over more than :data:`PROGRESS_MIN_WINDOWS`
    windows reports on stderr how far it is (``case X: 400/1872 windows``)."""
    token = _progress_case.set(case)
    try:
        yield
    finally:
        _progress_case.reset(token)


class _Progress:
    """A tqdm bar when stderr is a terminal, else a plain line every ``PROGRESS_EVERY_S``."""

    def __init__(self, case: str, total: int) -> None:
        self.case, self.total, self.done = case, total, 0
        self.last = _clock()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"case {case}", unit="window", leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = _clock()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            print(f"case {self.case}: {self.done}/{self.total} windows", file=sys.stderr,
                  flush=True)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(total: int) -> _Progress | None:
    case = _progress_case.get()
    return _Progress(case, total) if case is not None and total > PROGRESS_MIN_WINDOWS else None


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """First voxel of every window along one axis (``size >= patch``)."""
    if size <= patch:
        return [0]
    step = max(1.0, patch * (1.0 - overlap))
    n = math.ceil((size - patch) / step) + 1
    return [round(i * (size - patch) / (n - 1)) for i in range(n)]


def window_count(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """Windows :class:`SlidingWindow` places on an image of ``shape`` (padded to one window
    where it is smaller)."""
    return math.prod(
        len(window_starts(max(s, p), p, overlap)) for s, p in zip(shape, patch, strict=True)
    )


@functools.lru_cache(maxsize=8)
def _gaussian(patch: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    weights = gaussian_importance(patch, sigma_scale)
    weights.flags.writeable = False  # shared between calls
    return weights


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Weights ``(d, h, w)``: a Gaussian centred on the window, ``sigma = sigma_scale * patch``.

    Maximum 1; the smallest weight is clamped above 0 so every voxel has weight (nnU-Net does
    the same: a border voxel covered by one window only must not divide by zero).
    """
    axes = []
    for p in patch:
        sigma = max(sigma_scale * p, 1e-6)
        i = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
        axes.append(np.exp(-(i**2) / (2 * sigma**2)))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weights /= weights.max()
    return np.maximum(weights, 1e-3).astype(np.float32)


@dataclass
class SlidingWindow:
    """How a whole image is predicted window by window.

    Args:
        patch_size: Window ``(d, h, w)``; ``None`` uses the model's training patch.
        overlap: Fraction of a window shared with its neighbour along each axis, in [0, 1).
        batch_size: Windows per forward pass (their mirrored copies go in the same pass).
        mirror_axes: Spatial axes (0 = D, 1 = H, 2 = W) to flip for test-time augmentation;
            every combination is predicted (``[0, 1, 2]``: 8 passes per window). ``"auto"``
            stands for the axes the run's validation mirrored; a
            :class:`~hybrid_unet.inference.predictor.Predictor` resolves it from the checkpoint.
        sigma_scale: Gaussian sigma as a fraction of the window size; 0 averages uniformly.
        half_buffer_above_mb: Accumulate logits in float16 when the float32 buffer
            ``(K, D, H, W)`` would exceed this many MB (large volumes).
    """

    patch_size: list[int] | None = None
    overlap: float = 0.5
    batch_size: int = 4
    mirror_axes: list[int] | str = field(default_factory=list)
    sigma_scale: float = 0.125
    half_buffer_above_mb: float = 1024.0

    def __post_init__(self) -> None:
        axes = self.mirror_axes
        if axes != "auto" and (
            any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes)
        ):
            raise ValueError(
                f"mirror_axes must be 'auto' or distinct axes out of 0, 1, 2: {axes!r}"
            )
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.sigma_scale < 0:
            raise ValueError(f"sigma_scale must be >= 0, got {self.sigma_scale}")
        if self.patch_size is not None:
            self.patch_size = [int(p) for p in self.patch_size]
        if axes != "auto":
            self.mirror_axes = [int(a) for a in axes]

    @property
    def flips(self) -> list[tuple[int, ...]]:
        """Every combination of ``mirror_axes`` (the identity first), as spatial axes."""
        if self.mirror_axes == "auto":
            raise ValueError("mirror_axes='auto' must be resolved from a run first (Predictor)")
        axes = sorted(self.mirror_axes)
        return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]

    def settings(self) -> dict:
        """The fields as plain values (stored with an exported model)."""
        return {
            "patch_size": self.patch_size,
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "mirror_axes": self.mirror_axes if self.mirror_axes == "auto" else [*self.mirror_axes],
            "sigma_scale": self.sigma_scale,
            "half_buffer_above_mb": self.half_buffer_above_mb,
        }

    def __call__(
        self, image: np.ndarray, forward: Forward, num_classes: int, patch_size: Sequence[int]
    ) -> np.ndarray:
        """Logits ``(K, D, H, W)`` float32 of a preprocessed image ``(C, D, H, W)``.

        Args:
            image: Normalised image.
            forward: Batch of windows ``(N, C, d, h, w)`` -> logits ``(N, K, d, h, w)``.
            num_classes: ``K``.
            patch_size: Window used when ``self.patch_size`` is ``None``.
        """
        patch = tuple(self.patch_size or patch_size)
        shape = image.shape[1:]
        # A smaller image is padded with 0 (the mean after normalisation) to one window, on
        # both sides as nnU-Net and MONAI do, so the network sees it centred.
        pad = [(0, 0)] + [((p - s) // 2, p - s - (p - s) // 2) if p > s else (0, 0)
                          for s, p in zip(shape, patch, strict=True)]  # fmt: skip
        if any(after for _, after in pad):
            image = np.pad(image, pad)
        padded = image.shape[1:]
        weights = (
            _gaussian(patch, self.sigma_scale)
            if self.sigma_scale > 0
            else np.ones(patch, np.float32)
        )
        half = num_classes * math.prod(padded) * 4 > self.half_buffer_above_mb * 2**20
        logits = np.zeros((num_classes, *padded), np.float16 if half else np.float32)
        norm = np.zeros(padded, np.float32)
        starts = itertools.product(
            *(window_starts(s, p, self.overlap) for s, p in zip(padded, patch, strict=True))
        )
        slices = [tuple(slice(a, a + p) for a, p in zip(st, patch, strict=True)) for st in starts]
        flips = self.flips
        progress = _progress(len(slices))
        for first in range(0, len(slices), self.batch_size):
            batch = slices[first : first + self.batch_size]
            windows = np.stack([image[(slice(None), *sl)] for sl in batch])  # (n, C, d, h, w)
            inputs = [windows if not f else np.flip(windows, [a + 2 for a in f]) for f in flips]
            out = forward(windows if len(inputs) == 1 else np.concatenate(inputs))
            n = len(batch)
            # The forward's output is ours: average and weight it in place.
            mean = out[:n] if out.dtype == np.float32 else out[:n].astype(np.float32)
            for i, f in enumerate(flips[1:], start=1):
                mean += np.flip(out[i * n : (i + 1) * n], [a + 2 for a in f])
            mean *= weights if len(flips) == 1 else weights / len(flips)
            for j, sl in enumerate(batch):
                logits[(slice(None), *sl)] += mean[j]
                norm[sl] += weights
            if progress is not None:
                progress.update(n)
        if progress is not None:
            progress.close()
        out = (logits / norm).astype(np.float32) if half else np.divide(logits, norm, out=logits)
        return out[
            (slice(None), *(slice(a, a + s) for (a, _), s in zip(pad[1:], shape, strict=True)))
        ]


def softmax(logits: np.ndarray, axis: int = 0, inplace: bool = False) -> np.ndarray:
    """Numerically stable softmax over ``axis`` (the class axis of ``(K, D, H, W)``).

    With ``inplace`` the result overwrites ``logits`` (no second array of its size).
    """
    top = logits.max(axis=axis, keepdims=True)
    z = np.subtract(logits, top, out=logits) if inplace else logits - top
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z
