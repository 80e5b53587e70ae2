"""Predict label maps for new scans with one trained run or an ensemble of them."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hybrid_unet.config.errors import ConfigError
from hybrid_unet.data.io import read_image
from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.planning import Plan
from hybrid_unet.data.transforms import untrained_mirror_axes, validated_mirror_axes
from hybrid_unet.engine.build import instantiate_model, resolve_device
from hybrid_unet.engine.checkpoint import load_checkpoint, resolve_checkpoint
from hybrid_unet.inference.outputs import atomic_write_nifti
from hybrid_unet.inference.pipeline import Segmentation, segment
from hybrid_unet.inference.postprocessing import stored_classes
from hybrid_unet.inference.sliding_window import SlidingWindow, softmax
from hybrid_unet.inference.torch_forward import torch_forward


class Predictor:
    """Trained networks plus the preprocessing their training data went through.

    Args:
        checkpoints: One or more ``best.pt``/``last.pt`` files or run dirs (their ``best.pt``);
            several are an ensemble whose softmax outputs are averaged. They must share the
            plan's preprocessing (spacing, normalisation: the scan is preprocessed once) and
            the numbers of classes and channels; each predicts with its own training window.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        precision: ``fp32`` or ``bf16`` autocast for the forward passes.
        sliding_window: Window placement, batching and mirroring (default: 50% overlap,
            ``mirror_axes="auto"``). ``"auto"`` becomes the axes every run's validation
            mirrored (``trainer.val_mirror``; none without it), so prediction matches validation.
        mc_dropout_samples: With N > 0, each network predicts N times with dropout active
            (Monte-Carlo dropout) and the samples join the ensemble average.
        largest_component: Classes kept to their largest component, or ``"auto"``: the
            decision stored with the run(s) (``postprocessing.json``; classes all agree on).
        connectivity: Neighbourhood of a connected component (3: 26-connected).

    Raises:
        ConfigError: Naming ``predict``'s key: no checkpoint, a negative
            ``mc_dropout_samples`` or any on networks without dropout, a ``largest_component``
            class that is not one of the run's foreground classes, a bad ``device``.
        ValueError: Runs of an ensemble that do not fit together (classes, channels, plan).
    """

    def __init__(
        self,
        checkpoints: str | Path | Sequence[str | Path],
        device: str = "auto",
        precision: str = "fp32",
        sliding_window: SlidingWindow | None = None,
        mc_dropout_samples: int = 0,
        largest_component: str | Sequence[int] = "auto",
        connectivity: int = 3,
    ) -> None:
        if isinstance(checkpoints, str | Path):
            checkpoints = [checkpoints]
        if not checkpoints:
            raise ConfigError(["config key 'checkpoints': no checkpoint given"])
        if mc_dropout_samples < 0:
            raise ConfigError([f"config key 'mc_dropout_samples': {mc_dropout_samples} is "
                               "outside [0, inf) (0: no Monte-Carlo dropout)"])  # fmt: skip
        paths = [resolve_checkpoint(c) for c in checkpoints]
        loaded = [load_checkpoint(p) for p in paths]
        self.configs = [c["config"] for c in loaded]  # each run's training config, in order
        self.cfg = self.configs[0]
        self.plan = Plan(**loaded[0]["plan"]) if loaded[0].get("plan") else None
        self.num_classes = int(self.cfg["data"]["num_classes"])
        self.in_channels = int(self.cfg["data"]["in_channels"])
        # Each network predicts with its own training window (runs may differ in patch size
        # and in total stride); patch_size is the first's, for a single run.
        self.patch_sizes = [tuple(c["config"]["data"]["patch_size"]) for c in loaded]
        self.patch_size = self.patch_sizes[0]
        for path, ckpt in zip(paths[1:], loaded[1:], strict=True):
            self._check_compatible(path, ckpt)
        self.device = resolve_device(device, key="device")
        self.precision = precision
        self.models = []
        for path, ckpt in zip(paths, loaded, strict=True):
            _check_importable(path, ckpt["config"]["model"])
            model = instantiate_model(ckpt["config"]["model"])
            # The weight average (trainer.ema_decay) is what validation scored, when there is one.
            model.load_state_dict(ckpt.get("ema") or ckpt["model"])
            self.models.append(model.to(self.device).eval())
        self.sliding_window = sliding_window or SlidingWindow(mirror_axes="auto")
        if self.sliding_window.mirror_axes == "auto":
            common = set.intersection(*(set(validated_mirror_axes(c["config"])) for c in loaded))
            self.sliding_window = replace(self.sliding_window, mirror_axes=sorted(common))
        for path, ckpt in zip(paths, loaded, strict=True):
            unseen = untrained_mirror_axes(
                self.sliding_window.mirror_axes, ckpt["config"]["data"].get("augmentation")
            )
            if unseen:
                warnings.warn(
                    f"sliding_window.mirror_axes={self.sliding_window.mirror_axes}: {path} "
                    f"never trained with flips along axes {unseen}, so its mirrored predictions "
                    "can swap mirrored structures; mirror only the axes it trained flipped",
                    stacklevel=2,
                )
        if mc_dropout_samples and not any(_dropouts(m) for m in self.models):
            raise ConfigError([f"config key 'mc_dropout_samples': {mc_dropout_samples} but the "
                               "network has no dropout layer, so every sample would be the same "
                               "(train with model.dropout > 0, or leave it 0)"])  # fmt: skip
        self.mc_dropout_samples = mc_dropout_samples
        self.connectivity = connectivity
        if largest_component == "auto":
            self.largest_component = stored_classes(checkpoints)
        else:
            self.largest_component = _foreground_classes(largest_component, self.num_classes)
        self.checkpoints = paths

    @property
    def num_members(self) -> int:
        """Probability maps averaged per scan: networks x Monte-Carlo samples."""
        return len(self.models) * max(1, self.mc_dropout_samples)

    def _check_compatible(self, path: Path, ckpt: dict) -> None:
        data = ckpt["config"]["data"]
        plan = Plan(**ckpt["plan"]) if ckpt.get("plan") else None
        same_plan = (plan is None and self.plan is None) or (
            plan is not None
            and self.plan is not None
            and plan.preprocessing_hash() == self.plan.preprocessing_hash()
        )
        if data["num_classes"] != self.num_classes or data["in_channels"] != self.in_channels:
            raise ValueError(f"{path}: classes/channels differ from the first checkpoint's")
        if not same_plan:
            raise ValueError(
                f"{path}: its plan (spacing, normalisation, axis order) differs from the first's"
            )

    def members(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """Softmax ``(K, D, H, W)`` of a preprocessed image per network (and dropout sample)."""
        for model, patch_size in zip(self.models, self.patch_sizes, strict=True):
            forward = torch_forward(model, self.device, self.precision)
            samples = self.mc_dropout_samples or 1
            for m in _dropouts(model) if self.mc_dropout_samples else []:
                m.train()
            try:
                for _ in range(samples):
                    logits = self.sliding_window(image, forward, self.num_classes, patch_size)
                    yield softmax(logits, inplace=True)
            finally:
                model.eval()

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Mean softmax ``(K, D, H, W)`` of a preprocessed image ``(C, D, H, W)``."""
        return sum(self.members(image)) / self.num_members

    def segment(
        self,
        image: np.ndarray,
        geometry: Geometry,
        probabilities: bool = False,
        uncertainty: bool = False,
    ) -> Segmentation:
        """Segment a scan ``(C, D, H, W)`` as read; the result lies on the scan's own grid."""
        if image.shape[0] != self.in_channels:
            raise ValueError(
                f"{geometry.source}: {image.shape[0]} channels, the model expects {self.in_channels}"
            )
        return segment(image, geometry, self.plan, self.members, self.largest_component,
                       probabilities, uncertainty, self.connectivity)  # fmt: skip

    def predict(self, image: np.ndarray, geometry: Geometry) -> np.ndarray:
        """Label map ``(D, H, W)`` uint8 on the grid of ``image`` (``(C, D, H, W)``, as read)."""
        return self.segment(image, geometry).label

    def predict_file(self, source: str | Path, output: str | Path) -> Path:
        """Read a scan (NIfTI, DICOM folder, ...), predict, write a NIfTI label map atomically."""
        image, geometry = read_image(source)
        return atomic_write_nifti(output, self.predict(image, geometry), geometry)


def _foreground_classes(classes: Sequence[int], num_classes: int) -> list[int]:
    """``classes`` as a list, each a foreground class ``1..num_classes - 1`` of the run.

    Raises:
        ConfigError: Naming ``largest_component``, for the background or a class the run lacks
            (it was accepted and reported as kept, and did nothing).
    """
    outside = [c for c in classes if not 1 <= c < num_classes]
    if outside:
        raise ConfigError([f"config key 'largest_component': class(es) {outside} outside the "
                           f"run's foreground classes 1..{num_classes - 1} ({num_classes} classes, "
                           "0 the background)"])  # fmt: skip
    return list(classes)


def _dropouts(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]


def _check_importable(path: Path, model_cfg: dict) -> None:
    """A run whose network (or a part of it) is a class of one's own predicts only where that
    class imports: say so, naming it (Hydra said "Error locating target ...")."""
    from hybrid_unet.config.validate import import_failure

    dotted = [("_target_", model_cfg.get("_target_"))]
    dotted += [(k, v) for k, v in model_cfg.items() if str(k).endswith("attention")]
    for key, value in dotted:
        if isinstance(value, str) and "." in value and (why := import_failure(value)) is not None:
            raise ConfigError([f"{path}: model.{key} '{value}' cannot be imported here{why}; "
                               "predict where the run trained (the same PYTHONPATH)"])  # fmt: skip
