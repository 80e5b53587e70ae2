"""Checkpoints are written atomically and load with the safe unpickler, RNG state included.

Faults (full disk, kills, corrupt files, malicious pickles) are in tests/reliability/.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from hybrid_unet.engine import checkpoint
from hybrid_unet.engine.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state


def test_roundtrip_with_rng_state_under_weights_only(tmp_path):
    state = {"model": torch.nn.Linear(3, 2).state_dict(), "rng": rng_state(), "config": {"a": [1]}}
    path = atomic_save(state, tmp_path / "ckpt" / "last.pt")
    loaded = load_checkpoint(path)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(loaded["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert expected[:2] == got[:2] and torch.equal(expected[2], got[2])
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = atomic_save({"version": 1}, tmp_path / "last.pt")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(checkpoint.CheckpointWriteError, match="disk full"):
        atomic_save({"version": 2}, path)
    assert load_checkpoint(path) == {"version": 1}
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_failed_write_rotates_nothing(tmp_path, monkeypatch):
    """``last.pt`` becomes ``last-prev.pt`` only once the new file is complete."""
    path = atomic_save({"version": 1}, tmp_path / "last.pt")
    atomic_save({"version": 2}, path, keep_previous_as="last-prev.pt")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(checkpoint.CheckpointWriteError):
        atomic_save({"version": 3}, path, keep_previous_as="last-prev.pt")
    assert load_checkpoint(path) == {"version": 2}
    assert load_checkpoint(tmp_path / "last-prev.pt") == {"version": 1}


def test_the_file_is_flushed_to_disk_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    """Spies on the real calls (they still run): the order is what survives a power cut."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_save({"a": 1}, tmp_path / "last.pt")
    assert events == ["fsync", "replace", "fsync"]
