"""Predict label maps for new scans with a trained run, written back in the scan's geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybrid_unet.data.io import read_image
from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.io.nifti import write_nifti
from hybrid_unet.data.planning import Plan
from hybrid_unet.data.preprocessing import prepare_case, revert_preprocessing
from hybrid_unet.engine.build import instantiate_model, resolve_device
from hybrid_unet.engine.checkpoint import load_checkpoint
from hybrid_unet.engine.validation import predict_case


class Predictor:
    """A trained network plus the preprocessing its training data went through.

    Args:
        checkpoint: ``best.pt``/``last.pt`` of a run, or a run dir (its ``best.pt``).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        precision: ``fp32`` or ``bf16`` autocast for the forward passes.
        overlap: Sliding-window overlap.
        mirror: Average the prediction over flips along every spatial axis (8 passes).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "auto",
        precision: str = "fp32",
        overlap: float = 0.5,
        mirror: bool = False,
    ) -> None:
        path = Path(checkpoint)
        if path.is_dir():
            path = path / "checkpoints" / "best.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        ckpt = load_checkpoint(path)
        self.cfg = ckpt["config"]
        self.plan = Plan(**ckpt["plan"]) if ckpt.get("plan") else None
        self.device = resolve_device(device)
        self.model = instantiate_model(self.cfg["model"]).to(self.device).eval()
        # The weight average (trainer.ema_decay) is what validation scored, when there is one.
        self.model.load_state_dict(ckpt.get("ema") or ckpt["model"])
        self.patch_size = tuple(self.cfg["data"]["patch_size"])
        self.num_classes = self.cfg["data"]["num_classes"]
        self.precision, self.overlap, self.mirror = precision, overlap, mirror

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Softmax ``(K, D, H, W)`` of a preprocessed image ``(C, D, H, W)``."""
        probs = predict_case(self.model, image, self.patch_size, self.device, self.precision,
                             self.overlap)  # fmt: skip
        if not self.mirror:
            return probs
        flips = [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
        for axes in flips:
            flipped = np.flip(image, axis=axes)
            out = predict_case(self.model, flipped, self.patch_size, self.device, self.precision,
                               self.overlap)  # fmt: skip
            probs += np.flip(out, axis=axes)
        return probs / (len(flips) + 1)

    def predict(self, image: np.ndarray, geometry: Geometry) -> np.ndarray:
        """Label map ``(D, H, W)`` uint8 on the grid of ``image`` (``(C, D, H, W)``, as read)."""
        if image.shape[0] != self.cfg["data"]["in_channels"]:
            raise ValueError(
                f"{geometry.source}: {image.shape[0]} channels, the model expects "
                f"{self.cfg['data']['in_channels']}"
            )
        if self.plan is None:  # trained on a source without a plan (phantoms): z-score only
            x = (image - image.mean()) / max(float(image.std()), 1e-8)
            return self.probabilities(x.astype(np.float32)).argmax(0).astype(np.uint8)
        x, _, props = prepare_case(image, None, geometry, self.plan)
        label = self.probabilities(x).argmax(0).astype(np.uint8)
        return revert_preprocessing(label, props)

    def predict_file(self, source: str | Path, output: str | Path) -> Path:
        """Read a scan (NIfTI, DICOM folder, ...), predict, write a NIfTI label map.

        The output is written to a temporary name and renamed, so a failure never leaves a
        half-written file.
        """
        image, geometry = read_image(source)
        label = self.predict(image, geometry)
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(".tmp-" + output.name)
        write_nifti(tmp, label, geometry)
        tmp.replace(output)
        return output
