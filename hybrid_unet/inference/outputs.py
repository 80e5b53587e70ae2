"""Writing predictions: atomic files, one case at a time, a summary and a volume table.

Every file is written under a temporary name in its final folder and renamed into place, so a
prediction interrupted at any point leaves complete files only: a ``.tmp-*`` file left by a
hard kill is removed by the next run into the same folder. NumPy, nibabel and the readers only
(the ONNX runner uses this module too).
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from hybrid_unet.atomic import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
)
from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.geometry import DHW_TO_XYZ, Geometry
from hybrid_unet.data.io.nifti import write_nifti
from hybrid_unet.data.layouts import CaseRecord
from hybrid_unet.data.preprocessing import read_case
from hybrid_unet.inference.pipeline import Segmentation
from hybrid_unet.inference.sliding_window import report_progress
from hybrid_unet.inference.volumes import structure_volumes

SUMMARY_FILE = "summary.json"
VOLUMES_FILE = "volumes.csv"

# (image (C, D, H, W), geometry) -> the segmentation on the scan's grid.
Segmenter = Callable[[np.ndarray, Geometry], Segmentation]


def atomic_write_nifti(path: str | Path, array: np.ndarray, geometry: Geometry) -> Path:
    """:func:`~hybrid_unet.data.io.write_nifti` to a temporary name, fsync, rename."""
    with atomic_path(path, fsync=True) as tmp:
        write_nifti(tmp, array, geometry)
    return Path(path)


def csv_text(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows as CSV, columns in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_case(name: str, result: Segmentation, geometry: Geometry, output: Path) -> dict[str, str]:
    """The label map ``<name>.nii.gz`` and, when present, probabilities and uncertainty.

    ``probabilities/<name>.npz`` holds ``probabilities`` ``(K, x, y, z)`` float16, in the label
    NIfTI's own voxel order (``probabilities[:, i, j, k]`` belongs to the mask's voxel
    ``[i, j, k]``), with that NIfTI's ``affine`` and ``spacing`` ``(x, y, z)``.
    """
    written = {"label": str(atomic_write_nifti(output / label_file(name), result.label, geometry))}
    if result.probabilities is not None:
        path = output / "probabilities" / f"{name}.npz"
        xyz = result.probabilities.transpose(0, 3, 2, 1).astype(np.float16)  # from (K, D, H, W)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, probabilities=xyz, affine=geometry.affine @ DHW_TO_XYZ,
                                spacing=np.asarray(geometry.spacing[::-1]))  # fmt: skip
        written["probabilities"] = str(path)
    if result.uncertainty is not None:
        path = output / "uncertainty" / f"{name}.nii.gz"
        written["uncertainty"] = str(atomic_write_nifti(path, result.uncertainty, geometry))
    return written


def label_file(name: str) -> str:
    """The file name of case ``name``'s label map in an output folder."""
    return f"{name}.nii.gz"


def output_clash(
    cases: Sequence[CaseRecord], output: str | Path, what: str = "config key 'output'"
) -> str | None:
    """Why ``output`` must not receive these cases' label maps, else ``None``; ``what`` names
    the option in the message (``predict``'s config key, the ONNX runner's argument).

    It is a folder the scans are read from (a map would replace a scan of the same name, or
    be read as a scan next time), or it holds files named as the maps will be that no
    prediction wrote (no ``summary.json``: a dataset's ``labelsTr``, say). A folder a
    previous prediction wrote is predicted into again.
    """
    out = Path(output).resolve()
    for case in cases:
        for scan in map(Path, case.images):
            if out in (scan.resolve(), scan.resolve().parent):
                return (f"{what}: {output} is where the scans are read from "
                        f"({scan.name}); predict into another folder")  # fmt: skip
    if (out / SUMMARY_FILE).is_file():
        return None
    taken = [label_file(c.name) for c in cases if (out / label_file(c.name)).exists()]
    if not taken:
        return None
    more = f" and {len(taken) - 1} more label map names" if len(taken) > 1 else ""
    return (
        f"{what}: {output} already holds {taken[0]}{more}, which no "
        "prediction wrote (it has no summary.json); predict into another folder"
    )


def predict_cases(
    cases: Sequence[CaseRecord],
    segmenter: Segmenter,
    output: str | Path,
    class_names: Mapping[int, str],
    connectivity: int = 3,
    settings: Mapping[str, object] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Predict every case independently; a case that fails is reported and the rest go on.

    Writes, in ``output``: one label map per case, ``volumes.csv`` (per case, each structure's
    volume in mL and number of connected components) and ``summary.json`` (per case the files
    written or the error, the label map's ``shape_xyz`` and ``spacing_xyz`` in the written
    NIfTI's order, and ``settings``). Both tables are rewritten after every case.

    Returns:
        The summary: ``{"cases": [...], "failed": [...], "settings": {...}}``.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for folder in (output, output / "probabilities", output / "uncertainty"):
        remove_stale_temporaries(folder)  # of a run killed mid-write
    summary: dict = {"cases": [], "failed": [], "settings": dict(settings or {})}
    volumes: list[dict] = []
    for case in cases:
        started = time.perf_counter()
        try:
            image, _, geometry = read_case(case)
            with report_progress(case.name):  # a scan of many windows says how far it is
                result = segmenter(image, geometry)
            written = write_case(case.name, result, geometry, output)
        except (DataError, ValueError, OSError, RuntimeError) as exc:
            error = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
            summary["failed"].append({"case": case.name, "input": _inputs(case), "error": error})
            if os.environ.get("HYBRID_UNET_TRACEBACK") == "1":
                traceback.print_exc()
            log(f"FAILED {case.name}: {error}")
        else:
            seconds = round(time.perf_counter() - started, 3)
            row = {"case": case.name, **structure_volumes(result.label, geometry.spacing,
                                                          class_names, connectivity)}  # fmt: skip
            volumes.append(row)
            summary["cases"].append(
                {"case": case.name, "input": _inputs(case), "outputs": written, "seconds": seconds,
                 # the written NIfTI's own (x, y, z) order, as nibabel reports it
                 "shape_xyz": list(result.label.shape)[::-1],
                 "spacing_xyz": [float(s) for s in geometry.spacing][::-1]}
            )  # fmt: skip
            log(f"{case.name} -> {written['label']} ({seconds:.2f} s)")
        atomic_write_text(output / VOLUMES_FILE, csv_text(volumes))
        atomic_write_json(output / SUMMARY_FILE, summary, indent=1)
    return summary


def _inputs(case: CaseRecord) -> str:
    where = ", ".join(str(p) for p in case.images)
    return f"{where}::{case.key}" if case.key else where


def report(summary: Mapping, output: str | Path) -> int:
    """Print the closing ``Done:`` line of a prediction (and an ``error:`` line naming the
    failed cases); the exit code: 1 if a case failed, else 0."""
    failed = summary["failed"]
    print(f"Done: {len(summary['cases'])} case(s) written to {output}; {len(failed)} failed.")
    if not failed:
        return 0
    names = ", ".join(f["case"] for f in failed)
    print(f"error: {len(failed)} case(s) failed ({names}); see {output}/summary.json",
          file=sys.stderr)  # fmt: skip
    return 1
