"""Run an exported model with ONNX Runtime: the whole prediction, without torch.

    python -m hybrid_unet.inference.onnx_runner model.onnx INPUT OUTPUT_DIR

The ``.onnx`` file carries what prediction needs besides the weights (``export.py`` stores it
as the metadata entry ``hybrid_unet``): the plan (spacing, normalisation), class names, window
size and sliding-window settings, and the post-processing decision. This module imports NumPy,
SciPy (the resampling of :mod:`hybrid_unet.data.preprocessing`, so the runner preprocesses
exactly as training did), nibabel and onnxruntime, and the package's torch-free parts; a test
runs it with ``torch`` and ``monai`` made unimportable. INPUT is what ``predict`` accepts
(NIfTI file or folder, DICOM series, HDF5, NumPy, dataset.json with ``--split``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.planning import Plan
from hybrid_unet.inference.pipeline import Segmentation, segment
from hybrid_unet.inference.sliding_window import SlidingWindow, softmax

METADATA_KEY = "hybrid_unet"


class OnnxPredictor:
    """An exported network and its metadata, predicting as the PyTorch predictor does.

    Args:
        model: ``model.onnx`` written by ``python -m hybrid_unet.export``.
        providers: ONNX Runtime execution providers (default: CPU).
        num_threads: Intra-op threads (0: ONNX Runtime's default).
    """

    def __init__(
        self, model: str | Path, providers: list[str] | None = None, num_threads: int = 0
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        if not Path(model).is_file():
            raise DataError(model, "no such file")
        try:
            self.session = ort.InferenceSession(
                str(model), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own error types, one per cause
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(model, f"ONNX Runtime cannot load it as an ONNX model ({reason}); "
                                   "give the model.onnx that export wrote") from exc  # fmt: skip
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise DataError(model, "not exported by hybrid_unet (no 'hybrid_unet' metadata)")
        self.meta = json.loads(meta[METADATA_KEY])
        self.plan = Plan(**self.meta["plan"]) if self.meta["plan"] else None
        self.num_classes = int(self.meta["num_classes"])
        self.in_channels = int(self.meta["in_channels"])
        self.patch_size = tuple(self.meta["patch_size"])
        self.sliding_window = SlidingWindow(**self.meta["sliding_window"])
        self.largest_component = list(self.meta["largest_component"])
        self.connectivity = int(self.meta.get("connectivity", 3))
        self.class_names = {int(c): n for c, n in self.meta["class_names"].items()}
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, K, d, h, w)`` of windows ``(N, C, d, h, w)``."""
        return self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]

    def members(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """The one member: softmax ``(K, D, H, W)`` of a preprocessed image."""
        yield softmax(
            self.sliding_window(image, self.forward, self.num_classes, self.patch_size),
            inplace=True,
        )

    def segment(self, image: np.ndarray, geometry: Geometry) -> Segmentation:
        """Segment a scan ``(C, D, H, W)`` as read; the result lies on the scan's own grid."""
        if image.shape[0] != self.in_channels:
            raise ValueError(
                f"{geometry.source}: {image.shape[0]} channels, the model expects {self.in_channels}"
            )
        return segment(image, geometry, self.plan, self.members, self.largest_component,
                       connectivity=self.connectivity)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Predict INPUT into OUTPUT; returns the exit code: 2 (one ``error:`` line, nothing
    written) for a bad model, input or output folder (a file, the scans' own folder, a folder
    of reference labels), 1 if a case failed, else 0."""
    parser = argparse.ArgumentParser(prog="python -m hybrid_unet.inference.onnx_runner",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("model", type=Path, help="model.onnx from python -m hybrid_unet.export")
    parser.add_argument("input", type=Path, help="NIfTI file or folder, DICOM series, ...")
    parser.add_argument("output", type=Path, help="output folder")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    parser.add_argument("--split", choices=("test", "training"), default="test",
                        help="the cases of a dataset.json input to predict")  # fmt: skip
    args = parser.parse_args(argv)

    from hybrid_unet.cli import output_dir_problem
    from hybrid_unet.inference.inputs import find_cases
    from hybrid_unet.inference.outputs import output_clash, predict_cases, report

    problem = output_dir_problem(args.output)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        cases = find_cases(args.input, args.split)
        if clash := output_clash(cases, args.output, what="output"):  # the scans, or labelsTr
            print(f"error: {clash}", file=sys.stderr)
            return 2
        predictor = OnnxPredictor(args.model, num_threads=args.threads)
    except (DataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = predict_cases(cases, predictor.segment, args.output, predictor.class_names,
                            predictor.connectivity, {"model": str(args.model)})  # fmt: skip
    return report(summary, args.output)


if __name__ == "__main__":
    sys.exit(main())
