"""Checkpoint I/O: atomic writes, safe loads, RNG state in ``weights_only``-loadable form."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybrid_unet import __version__


def atomic_save(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` with ``torch.save`` so that ``path`` is either the old file or the new one.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, and the
    file is renamed over ``path`` (atomic on POSIX); the directory is fsynced too so the rename
    survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a small text file so readers see the old or the new content, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with the safe unpickler (it cannot run code)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop touches, in forms the safe loader accepts."""
    # The legacy np.random.get_state() tuple is refused by weights_only loading, and the
    # MT19937 key is an ndarray: keep it as a plain list.
    numpy_state = np.random.mtrand._rand._bit_generator.state
    state = {
        "python": random.getstate(),
        "numpy": {**numpy_state, "state": {
            "key": numpy_state["state"]["key"].tolist(), "pos": numpy_state["state"]["pos"]
        }},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {
        "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32),
        "pos": numpy_state["state"]["pos"],
    }
    np.random.mtrand._rand._bit_generator.state = numpy_state
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DDP's ``.module`` and ``torch.compile``'s ``._orig_mod``."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def checkpoint_metadata() -> dict[str, str]:
    """Versions that produced a checkpoint."""
    return {"hybrid_unet": __version__, "torch": str(torch.__version__)}
