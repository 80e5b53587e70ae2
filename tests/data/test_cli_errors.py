"""Bad datasets through the training CLI: one readable error naming the file, nothing half-written.

Each case writes a tiny Decathlon dataset into ``tmp_path``, breaks one file and runs
``python -m hybrid_unet.train data=hippocampus ...`` in a subprocess (about 20 s on a 2-core
CPU, hence ``slow``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hybrid_unet.data.real import DatasetSource
from tests.helpers import REPO, run_train

pytestmark = pytest.mark.slow

SHAPE = (32, 32, 32)  # nibabel (x, y, z); large enough for the 4-stage quick_test network
BAD = "case_001"


def _image(root: Path, name: str) -> Path:
    return root / "imagesTr" / f"{name}.nii.gz"


def _label(root: Path, name: str) -> Path:
    return root / "labelsTr" / f"{name}.nii.gz"


def _shape_mismatch(root: Path, name: str = BAD) -> Path:
    path = _label(root, name)
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 30), np.uint8), np.eye(4)), str(path))
    return path


def _spacing_mismatch(root: Path, name: str = BAD) -> Path:
    path = _label(root, name)
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def _undeclared_label(root: Path, name: str = BAD) -> Path:
    path = _label(root, name)
    label = np.asarray(nib.load(str(path)).dataobj).copy()
    label[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(path))
    return path


def _nan_voxels(root: Path, name: str = BAD) -> Path:
    path = _image(root, name)
    image = np.asarray(nib.load(str(path)).dataobj).astype(np.float32)
    image[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(path))
    return path


def _truncated(root: Path, name: str = BAD) -> Path:
    path = _image(root, name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _missing(root: Path, name: str = BAD) -> Path:
    path = _label(root, name)
    path.unlink()
    return path


BREAKERS: dict[str, Callable[[Path, str], Path]] = {
    "shape_mismatch": _shape_mismatch,
    "spacing_mismatch": _spacing_mismatch,
    "undeclared_label": _undeclared_label,
    "nan_voxels": _nan_voxels,
    "truncated_gz": _truncated,
    "missing_file": _missing,
}


def _train(root: Path, cache: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_train(
        [
            "data=hippocampus",
            f"data.source.root={root}",
            f"data.source.cache_dir={cache}",
            "data.num_classes=3",
            "+preset=quick_test",
            "trainer.max_epochs=1",
            "trainer.progress=false",
            *extra,
        ],
        cwd=cwd,
    )


def _assert_clean_failure(result: subprocess.CompletedProcess, bad: Path, cwd: Path) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert str(bad) in result.stderr, result.stderr
    assert not list((cwd / "runs").rglob("*.pt")), "a failed run wrote a checkpoint"


def _assert_no_partial_files(cache: Path) -> None:
    files = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert not [p for p in files if ".tmp" in p.name], files
    for npy in (p for p in files if p.suffix == ".npy"):
        case = npy.name.rsplit("_", 1)[0]
        assert (npy.parent / f"{case}.json").is_file(), f"{npy} without its finished marker"


@pytest.mark.parametrize("kind", sorted(BREAKERS))
def test_bad_input_fails_cleanly(kind, tmp_path, decathlon_writer):
    root = decathlon_writer(tmp_path / "data", num_cases=4, shape=SHAPE)
    bad = BREAKERS[kind](root)
    cache = tmp_path / "cache"
    result = _train(root, cache, tmp_path)
    _assert_clean_failure(result, bad, tmp_path)
    assert not list(cache.rglob("*.npy")), "a bad dataset was (partly) preprocessed"
    _assert_no_partial_files(cache)


def test_error_in_a_worker_process_names_the_file(tmp_path, decathlon_writer):
    # Validation off: the fingerprint's reader processes (data.source.num_workers=2) hit the
    # truncated file themselves; their DataError must cross the process boundary intact.
    root = decathlon_writer(tmp_path / "data", num_cases=4, shape=SHAPE)
    bad = _truncated(root)
    result = _train(root, tmp_path / "cache", tmp_path, "+data.source.validate=false")
    _assert_clean_failure(result, bad, tmp_path)
    assert "BrokenProcessPool" not in result.stderr, result.stderr
    _assert_no_partial_files(tmp_path / "cache")


def test_bad_file_added_keeps_existing_cache(tmp_path, decathlon_writer):
    root = decathlon_writer(tmp_path / "data", num_cases=4, shape=SHAPE)
    cache = tmp_path / "cache"
    DatasetSource(root, cache, num_classes=3, num_workers=0)  # what a first run does
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert any(p.suffix == ".npy" for p in before)

    # A new case arrives whose label has an undeclared value.
    name = "case_new"
    image, label = _image(root, "case_000"), _label(root, name)
    _image(root, name).write_bytes(image.read_bytes())
    values = np.asarray(nib.load(str(_label(root, "case_000"))).dataobj).copy()
    values[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(values, np.eye(4)), str(label))
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append(
        {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
    )
    meta["numTraining"] += 1
    (root / "dataset.json").write_text(json.dumps(meta))

    result = _train(root, cache, tmp_path)
    _assert_clean_failure(result, label, tmp_path)
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert {p: after.get(p) for p in before} == before, "preprocessed files were lost or rewritten"
    _assert_no_partial_files(cache)


def test_check_dataset_lists_every_problem(tmp_path, decathlon_writer):
    root = decathlon_writer(tmp_path / "data", num_cases=6, shape=(12, 12, 12))
    names = [f"case_{i:03d}" for i in range(6)]
    bad = [breaker(root, name) for breaker, name in zip(BREAKERS.values(), names, strict=True)]
    result = subprocess.run(
        [sys.executable, "scripts/check_dataset.py", str(root), "--workers", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out, out
    assert f"{len(bad)} problem(s)" in out, out
    for path in bad:
        assert str(path) in out, f"{path} not reported:\n{out}"
