"""The sweep-summary callback tabulates the jobs of the launch wherever the runs dir is."""

from __future__ import annotations

import csv
import json

import pytest
from omegaconf import OmegaConf

from hybrid_unet.engine import sweep
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
        job = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(folder)}}})
        callback.on_job_start(job)
        callback.on_job_end(job, None)
    (tmp_path / "runs" / "multirun" / "s" / "9").mkdir()  # an earlier, larger sweep's job
    (tmp_path / "runs" / "multirun" / "s" / "9" / "summary.json").write_text("{}")
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": "runs/multirun/s"}}}))
    with open(tmp_path / "runs" / "multirun" / "s" / "sweep_summary.csv") as f:
        assert [row["job"] for row in csv.DictReader(f)] == ["0", "1"]


def test_the_summary_is_written_atomically_and_prints_a_rounded_dice(tmp_path, monkeypatch, capsys):
    """A failing write leaves the previous summary as it was (the file goes through
    ``atomic_path``), and the closing line shows the best Dice to 4 places."""

    folder = tmp_path / "s" / "0"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"best_mean_dice": 0.123456789}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "s")}}})
    sweep.SweepSummary().on_multirun_end(config)
    assert "best mean Dice 0.1235 in 0" in capsys.readouterr().out
    before = (tmp_path / "s" / "sweep_summary.csv").read_text()

    class Broken(csv.DictWriter):
        def writerows(self, rows):
            raise OSError("disk full")

    monkeypatch.setattr(sweep.csv, "DictWriter", Broken)
    with pytest.raises(OSError):
        sweep.SweepSummary().on_multirun_end(config)
    assert (tmp_path / "s" / "sweep_summary.csv").read_text() == before
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["0", "sweep_summary.csv"]
