"""The one atomic writer every file of the project goes through."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hybrid_unet.atomic import (
    PREFIX,
    atomic_path,
    atomic_write_text,
    remove_stale_temporaries,
    temporary_path,
)


def test_temporary_is_per_process_and_keeps_the_suffix(tmp_path):
    tmp = temporary_path(tmp_path / "case.nii.gz")
    assert tmp.parent == tmp_path
    assert tmp.name == f"{PREFIX}{os.getpid()}-case.nii.gz"
    assert tmp.name.endswith(".nii.gz")


def test_write_replaces_and_creates_the_folder(tmp_path):
    path = tmp_path / "new" / "summary.json"
    assert atomic_write_text(path, "one") == path
    with atomic_path(path, fsync=True) as tmp:
        tmp.write_text("two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["last.pt"]


def test_only_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f"{PREFIX}{dead.stdout.strip()}-last.pt"
    ours = temporary_path(tmp_path / "best.pt")
    parent = tmp_path / f"{PREFIX}{os.getppid()}-case.nii.gz"  # a live writer
    unrelated = tmp_path / "tmp-notes.txt"
    for path in (stale, ours, parent, unrelated):
        path.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (ours, parent, unrelated)
    )
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_json_is_strict_an_undefined_number_becomes_null(tmp_path):
    import json

    from hybrid_unet.atomic import atomic_write_json

    path = atomic_write_json(tmp_path / "s.json", {"sd": float("nan"), "hd": [1.5, float("inf")]})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"sd": None, "hd": [1.5, None]}
