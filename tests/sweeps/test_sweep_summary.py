"""The sweep-summary callback tabulates the jobs of the launch wherever the runs dir is."""

from __future__ import annotations

import csv
import json

from omegaconf import OmegaConf

from hybrid_unet.engine.sweep import SweepSummary


def test_a_relative_runs_dir_still_gets_its_summary(tmp_path, monkeypatch):
    """The default runs dir is relative ("runs"): Hydra's sweep dir stays relative while each
    job's output_dir is absolute, and the summary must still match the two."""
    monkeypatch.chdir(tmp_path)
    callback = SweepSummary()
    for job in ("0", "1"):
        folder = tmp_path / "runs" / "multirun" / "s" / job
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"best_mean_dice": 0.5, "complete": True}))
        callback.on_job_end(OmegaConf.create({"hydra": {"runtime": {"output_dir": str(folder)}}}),
                            None)  # fmt: skip
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": "runs/multirun/s"}}}))
    with open(tmp_path / "runs" / "multirun" / "s" / "sweep_summary.csv") as f:
        assert [row["job"] for row in csv.DictReader(f)] == ["0", "1"]
