"""Checkpoint strategies (last, best on min/max, top-k, every N) and resume fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_unet.engine.checkpoint import load_checkpoint
from hybrid_unet.engine.manager import CheckpointManager, find_resumable
from hybrid_unet.engine.state import TrainState
from tests.helpers import train_in_process


def _run(manager: CheckpointManager, values: list[float | None]) -> TrainState:
    state = TrainState(best_metric=manager.worst())
    for value in values:
        state.epoch += 1
        state.step += 3
        metrics = {"train_loss": 1.0} if value is None else {"mean_dice": 0.5, "val_loss": value}
        manager.after_epoch(state, metrics, lambda: {"model": {}, "state": state.state_dict()})
        manager.save_last({"model": {}, "state": state.state_dict()})
    return state


def _names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_best_and_top_k_on_a_minimised_metric(tmp_path):
    manager = CheckpointManager(tmp_path, monitor="val_loss", mode="min", save_top_k=2)
    state = _run(manager, [0.9, 0.5, None, 0.7, 0.6, 0.8])
    assert (state.best_metric, state.best_epoch) == (0.5, 2)
    assert load_checkpoint(tmp_path / "best.pt")["state"]["epoch"] == 2
    assert _names(tmp_path) == [
        "best.pt", "last-prev.pt", "last.pt", "top-epoch0002.pt", "top-epoch0005.pt",
    ]  # fmt: skip
    assert load_checkpoint(tmp_path / "last.pt")["state"]["epoch"] == 6
    assert load_checkpoint(tmp_path / "last-prev.pt")["state"]["epoch"] == 5


def test_every_n_epochs_and_no_best(tmp_path):
    manager = CheckpointManager(tmp_path, monitor="val_loss", save_top_k=0, every_n_epochs=2)
    _run(manager, [0.1, 0.2, 0.3, 0.4, 0.5])
    assert _names(tmp_path) == ["epoch-0002.pt", "epoch-0004.pt", "last-prev.pt", "last.pt"]


def test_keep_all_with_minus_one(tmp_path):
    manager = CheckpointManager(tmp_path, monitor="val_loss", mode="max", save_top_k=-1)
    _run(manager, [0.1, 0.3, 0.2])
    assert len(list(tmp_path.glob("top-epoch*.pt"))) == 3


def test_bad_settings_and_unknown_monitor_are_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        CheckpointManager(tmp_path, mode="maximum")
    with pytest.raises(ValueError, match="every_n_epochs"):
        CheckpointManager(tmp_path, every_n_epochs=0)
    manager = CheckpointManager(tmp_path, monitor="mean_dise")
    with pytest.raises(ValueError, match="did you mean mean_dice"):
        manager.monitored({"mean_dice": 0.5})


def test_truncated_last_falls_back_to_the_previous_one(tmp_path, capsys):
    manager = CheckpointManager(tmp_path)
    _run(manager, [None, None])
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    path, ckpt = find_resumable(tmp_path)
    assert path.name == "last-prev.pt" and ckpt["state"]["epoch"] == 1
    assert f"skipping unreadable checkpoint {last}" in capsys.readouterr().err


def test_resume_auto_skips_a_truncated_last_and_records_metadata(tmp_path, capsys):
    train_in_process(["trainer.max_epochs=2", "trainer.steps_per_epoch=2"], tmp_path)
    meta = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["meta"]
    assert (meta["epoch"], meta["step"]) == (2, 4)
    assert {"hybrid_unet", "torch", "metrics", "saved_at"} <= meta.keys()
    assert "mean_dice" in meta["metrics"]
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    summary, _ = train_in_process(
        ["trainer.max_epochs=3", "trainer.steps_per_epoch=2", "trainer.resume=auto"], tmp_path
    )
    out = capsys.readouterr()
    assert f"skipping unreadable checkpoint {last}" in out.err
    assert "last-prev.pt at epoch 1, step 2" in out.out
    assert summary["steps"] == 6 and summary["epochs"] == 3


def test_a_writers_temporary_is_never_a_resume_candidate(tmp_path, capsys):
    manager = CheckpointManager(tmp_path)
    _run(manager, [None, None])
    torn = tmp_path / ".tmp-4242-last.pt"  # a writer killed half-way (pid 4242 or any)
    torn.write_bytes((tmp_path / "last.pt").read_bytes()[:100])
    assert torn not in manager.candidates()
    (tmp_path / "last.pt").unlink()
    (tmp_path / "last-prev.pt").unlink()
    assert find_resumable(tmp_path) is None
    assert "skipping" not in capsys.readouterr().err
