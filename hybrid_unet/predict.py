"""Segment new scans with a trained run.

    python -m hybrid_unet.predict RUN_DIR_OR_CHECKPOINT INPUT OUTPUT [--mirror] [--bf16]

INPUT is a scan (``.nii.gz``, ``.nii``, ``.npz``, ``.h5`` case) or a DICOM series folder, or a
folder of NIfTI scans (an MSD ``imagesTs``); OUTPUT is a file for one scan or a folder. Label
maps are written as NIfTI with the input's own geometry (affine), at its original size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hybrid_unet.data.errors import DataError

_NIFTI = (".nii.gz", ".nii")


def _inputs(source: Path) -> list[Path]:
    """Scans under ``source``: itself, or the NIfTIs of a folder (a DICOM folder is one scan)."""
    if source.is_dir():
        scans = sorted(p for p in source.iterdir() if p.name.endswith(_NIFTI))
        return scans or [source]
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    return [source]


def _output_for(scan: Path, source: Path, output: Path) -> Path:
    if source.is_dir() and scan != source:
        return output / scan.name.replace("_0000.nii", ".nii")
    if output.name.endswith(_NIFTI):
        return output
    stem = scan.name.split(".")[0] if scan.is_file() else scan.name
    return output / f"{stem}.nii.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_unet.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("checkpoint", type=Path, help="run dir (uses best.pt) or a checkpoint")
    parser.add_argument("input", type=Path, help="scan, DICOM folder, or folder of NIfTIs")
    parser.add_argument("output", type=Path, help="output .nii.gz or folder")
    parser.add_argument("--mirror", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from hybrid_unet.inference.predictor import Predictor

    try:
        predictor = Predictor(args.checkpoint, args.device, "bf16" if args.bf16 else "fp32",
                              args.overlap, args.mirror)  # fmt: skip
        scans = _inputs(args.input)
        for scan in scans:
            started = time.perf_counter()
            out = predictor.predict_file(scan, _output_for(scan, args.input, args.output))
            print(f"{scan} -> {out} ({time.perf_counter() - started:.2f} s)")
    except (DataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
