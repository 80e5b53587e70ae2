"""Atomic file writes: a reader, or a run resumed after a kill, finds the old file or the new
one, never half of one.

Every writer of the project writes to a temporary name beside its target,
``.tmp-<pid>-<name>``, and renames that over the target (atomic on POSIX). The name is per
process, so writers running at once (torchrun ranks, loader workers, two ``predict`` runs into
one folder) never share one, and it keeps the target's suffix, which nibabel (``.nii.gz``) and
NumPy go by. A hard kill can leave a temporary behind; :func:`remove_stale_temporaries`
deletes those whose process is gone.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = ".tmp-"


def temporary_path(path: str | Path) -> Path:
    """The temporary name this process writes ``path`` under: ``.tmp-<pid>-<name>``."""
    path = Path(path)
    return path.with_name(f"{PREFIX}{os.getpid()}-{path.name}")


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` if the block ends without error.

    The parent folder is created. On an error the temporary is deleted and ``path`` is left
    as it was. ``fsync`` flushes the new file and the folder to disk before and after the
    rename, so the new content also survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if fsync:
        fsync_folder(path.parent)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj, indent: int = 2) -> Path:
    """Write ``obj`` as strict JSON atomically: NaN and infinities (an undefined metric, the
    standard deviation of one value) become ``null``, which every JSON reader accepts."""
    return atomic_write_text(path, json.dumps(_finite(obj), indent=indent, allow_nan=False))


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries in ``folder`` whose writing process is gone; returns them.

    A temporary of a live process (another run writing into the same folder) is kept.
    """
    folder = Path(folder)
    removed = []
    for tmp in sorted(folder.glob(f"{PREFIX}*")) if folder.is_dir() else []:
        pid = tmp.name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
