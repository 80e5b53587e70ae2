"""Stopping a run and resuming it gives the same weights as never stopping."""

from __future__ import annotations

import csv

import pytest
import torch

from hybrid_unet.engine.checkpoint import load_checkpoint
from tests.helpers import TINY, cli

pytestmark = pytest.mark.slow

# The LR schedule spans 4 epochs x 3 steps in both runs: the 2-epoch run is the first half of
# the 4-epoch one, stopped early. (With the default horizon, trainer.max_epochs itself, a
# 2-epoch run would decay its LR to zero by its own end, and no resume could undo that.)
SCHEDULE = ["scheduler.total_steps=12", "trainer.val_every=2"]


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = cli([*TINY, *SCHEDULE, "trainer.max_epochs=4", "run_name=straight"], tmp_path)
    assert straight.code == 0, straight.stderr[-3000:]
    first = cli([*TINY, *SCHEDULE, "trainer.max_epochs=2", "run_name=split"], tmp_path)
    assert first.code == 0, first.stderr[-3000:]
    split_dir = tmp_path / "runs" / "split"
    # The resume names only the run and what changes: its other overrides are replayed.
    second = cli([f"trainer.resume={split_dir}", "trainer.max_epochs=4"], tmp_path)
    assert second.code == 0, second.stderr[-3000:]
    assert "Resumed from" in second.stdout

    a = load_checkpoint(tmp_path / "runs" / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(split_dir / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 12
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    rows_a, rows_b = _rows(tmp_path / "runs" / "straight"), _rows(split_dir)
    assert [r["step"] for r in rows_b] == ["3", "6", "9", "12"]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ("train_loss", "lr", "mean_dice"):
            assert float(ra[key] or "nan") == pytest.approx(
                float(rb[key] or "nan"), rel=1e-5, nan_ok=True
            )
