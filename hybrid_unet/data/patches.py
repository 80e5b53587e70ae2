"""Training patches: random crops with foreground oversampling, reproducible from the step.

Item ``i`` is a pure function of ``(seed, i)``: the trainer reads items
``step * batch_size ...`` in order, so the data order survives a resume (and any number of
workers) without replaying the epochs before it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from hybrid_unet.data.case import Case

Transform = Callable[[dict, int], dict]

_MAX_FG_LOCATIONS = 10_000  # per class; enough to sample from, small to keep


class CaseCache:
    """Loads cases from a source on first use and keeps them with their foreground locations."""

    def __init__(self, source, names: Sequence[str]) -> None:
        self.source = source
        self.names = list(names)
        self._cases: dict[str, Case] = {}
        self._fg: dict[str, list[np.ndarray]] = {}

    def get(self, name: str) -> tuple[Case, list[np.ndarray]]:
        if name not in self._cases:
            case = self.source.load(name)
            self._cases[name] = case
            ignore = getattr(self.source, "ignore_label", None)
            self._fg[name] = _foreground_locations(case.label, name, ignore)
        return self._cases[name], self._fg[name]


def _foreground_locations(
    label: np.ndarray | None, name: str, ignore_label: int | None = None
) -> list[np.ndarray]:
    """Up to ``_MAX_FG_LOCATIONS`` voxel coordinates per foreground class present in ``label``
    (not the unannotated voxels of ``ignore_label``)."""
    if label is None:
        return []
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # str hash() differs per process
    locations = []
    for cls in np.unique(label):
        if cls == 0 or cls == ignore_label:
            continue
        coords = np.argwhere(label == cls)
        if len(coords) > _MAX_FG_LOCATIONS:
            coords = coords[rng.choice(len(coords), _MAX_FG_LOCATIONS, replace=False)]
        locations.append(coords)
    return locations


def crop_patch(
    array: np.ndarray, start: Sequence[int], patch_size: Sequence[int], fill: float = 0.0
) -> np.ndarray:
    """Crop ``array[..., start:start+patch]`` over the last three axes, padding with ``fill``.

    ``start`` may be negative or run past the end: the part outside the array is padded.
    """
    lead = array.shape[:-3]
    out = np.full((*lead, *patch_size), fill, dtype=array.dtype)
    src, dst = [], []
    for s, p, n in zip(start, patch_size, array.shape[-3:], strict=True):
        lo, hi = max(s, 0), min(s + p, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(..., *dst)] = array[(..., *src)]
    return out


def _centred_crop(
    case: Case, start: Sequence[int], patch_size: Sequence[int], size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Image and label over a region of ``size`` with the patch at ``start`` at its centre."""
    start = [s - (n - p) // 2 for s, n, p in zip(start, size, patch_size, strict=True)]
    label = crop_patch(case.label[None], start, size) if case.label is not None else None
    return crop_patch(case.image, start, size), label


class PatchDataset(Dataset):
    """Random training patches of ``patch_size`` from the named cases.

    Args:
        source: Case source (``case_names()``, ``load(name)``).
        names: Cases to draw from.
        patch_size: ``(D, H, W)`` of every patch.
        batch_size: Used only to place foreground-forced items at the end of each batch.
        oversample_foreground: Fraction of each batch centred on a random foreground class.
        transform: Optional ``(sample, seed) -> sample`` augmentation. One with a true
            ``takes_context`` attribute also gets ``sample["context"]``: ``size -> (image,
            label)``, a crop of ``size`` centred on the patch, for rotation and scaling to
            read what lies beyond the patch's edges.
        seed: Base seed.

    Items are ``{"image": (C, D, H, W) float32, "label": (1, D, H, W) int64}`` tensors.
    """

    def __init__(
        self,
        source,
        names: Sequence[str],
        patch_size: Sequence[int],
        batch_size: int,
        oversample_foreground: float = 0.33,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        if not names:
            raise ValueError("PatchDataset needs at least one case")
        if not 0.0 <= oversample_foreground <= 1.0:
            raise ValueError(
                f"oversample_foreground must be in [0, 1], got {oversample_foreground}"
            )
        self.cache = CaseCache(source, names)
        self.names = list(names)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.num_forced = round(batch_size * oversample_foreground)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:  # items are indexed by global position; the sampler bounds them
        return 2**62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        name = self.names[rng.integers(len(self.names))]
        case, fg = self.cache.get(name)
        shape = case.image.shape[1:]
        force_fg = (index % self.batch_size) >= self.batch_size - self.num_forced
        if force_fg and fg:
            locations = fg[rng.integers(len(fg))]
            centre = locations[rng.integers(len(locations))]
            start = [int(c) - p // 2 for c, p in zip(centre, self.patch_size, strict=True)]
        else:
            # Inside the volume where the patch fits; where it does not, the volume lies at a
            # random place inside the patch.
            start = [
                int(rng.integers(min(0, n - p), max(0, n - p) + 1))
                for n, p in zip(shape, self.patch_size, strict=True)
            ]
        image = crop_patch(case.image, start, self.patch_size)
        label = crop_patch(case.label[None], start, self.patch_size)
        sample = {"image": image, "label": label}
        if getattr(self.transform, "takes_context", False):
            sample["context"] = partial(_centred_crop, case, start, self.patch_size)
        if self.transform is not None:
            sample = self.transform(sample, int(rng.integers(2**31)))
        return {
            "image": torch.as_tensor(np.ascontiguousarray(sample["image"]), dtype=torch.float32),
            "label": torch.as_tensor(np.ascontiguousarray(sample["label"]), dtype=torch.int64),
        }


class StepSampler(Sampler[int]):
    """Yields item indices ``start, start + 1, ...`` forever: the data order is the step order."""

    def __init__(self, start: int = 0) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        index = self.start
        while True:
            yield index
            index += 1
