"""summary.json and the closing lines report best metrics, cost and time."""

from __future__ import annotations

import json

from hybrid_unet.train import summary_lines
from tests.helpers import train_in_process


def test_summary_reports_cost_and_time(tmp_path):
    summary, _ = train_in_process(
        ["trainer.max_epochs=2", "trainer.steps_per_epoch=1", "data.max_val_cases=1"], tmp_path
    )
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == summary
    assert summary["complete"] is True and summary["epochs"] == 2
    assert summary["parameters"] > 1000 and summary["flops_per_patch"] > 1e6
    assert summary["peak_memory_mb"] > 10 and summary["seconds_per_epoch"] > 0
    assert summary["monitor"] == "mean_dice" and summary["best_metric"] is not None
    text = summary_lines(summary)
    assert text.startswith("Done: best mean Dice")
    for part in ("parameters", "GFLOP per patch", "peak memory", "s per epoch", "compute in all"):
        assert part in text
    stopped = summary_lines({**summary, "complete": False})  # stopped by a signal, say
    assert stopped.startswith("Not finished (resumable): best mean Dice")
