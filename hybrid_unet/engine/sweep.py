"""Multirun support: skip finished jobs, resume unfinished ones, tabulate the sweep.

A sweep is re-runnable when its dirs are stable: name it (``run_name=my_sweep``) and the
same command maps every job to the same ``<runs>/multirun/my_sweep/<job number>`` dir. A
changed command (another value added, another Optuna seed) numbers its jobs differently, so
before a job skips or resumes a dir, :func:`check_same_job` compares the settings the dir was
trained with against the job's own.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

_COLUMNS = ("job", "overrides", "best_mean_dice", "monitor", "best_metric", "best_epoch",
            "epochs", "complete", "stop_reason", "train_seconds", "run_dir")  # fmt: skip


def finished_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The job's ``summary.json`` if it says the run is complete, else ``None``."""
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("complete") else None


def check_same_job(run_dir: str | Path, resolved: dict[str, Any]) -> tuple[Path, dict] | None:
    """Refuse a job dir whose newest checkpoint was trained with other settings than ``resolved``
    (values the plan fills later, null in ``resolved``, are not compared).

    Returns:
        The newest readable checkpoint's path and contents (``None``: none), for the resume,
        so it is read once.

    Raises:
        ConfigError: naming the dir and the first differing keys.
    """
    from hybrid_unet.config.errors import ConfigError
    from hybrid_unet.engine.manager import find_resumable
    from hybrid_unet.engine.resume import NOT_SETTINGS, config_changes

    found = find_resumable(Path(run_dir) / "checkpoints")
    if found is None:
        return None
    stored = found[1].get("config") or {}
    changes = [
        f"{key}: {before!r} there, {after!r} now"
        for key, before, after in config_changes(stored, resolved)
        if after is not None and not key.startswith(NOT_SETTINGS)
    ]
    if changes:
        raise ConfigError([
            f"{run_dir} holds a sweep job trained with other settings ("
            + "; ".join(changes[:3]) + (" ..." if len(changes) > 3 else "")
            + "): a changed sweep numbers its jobs anew, so give it its own run_name"
        ])  # fmt: skip
    return found


def sweep_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job dir of ``sweep_dir`` that wrote a ``summary.json``, in job order."""
    rows = []
    for path in Path(sweep_dir).glob("*/summary.json"):
        job = path.parent
        try:
            summary = json.loads(path.read_text())
        except ValueError:
            continue
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        row = {key: summary.get(key) for key in _COLUMNS}
        row.update(job=job.name, overrides=" ".join(overrides or []), run_dir=str(job))
        rows.append(row)
    return sorted(rows, key=lambda r: (_job_number(r["job"]), r["job"]))


def _job_number(name: str) -> int:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


class SweepSummary(Callback):
    """Hydra callback: ``<sweep dir>/<filename>`` tabulates every job's best metrics."""

    def __init__(self, filename: str = "sweep_summary.csv") -> None:
        self.filename = filename
        self.job_dirs: set[str] = set()  # this launch's jobs (empty when jobs run elsewhere)

    def on_job_end(self, config, job_return: Any, **kwargs: Any) -> None:
        self.job_dirs.add(str(Path(config.hydra.runtime.output_dir)))

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = sweep_rows(sweep_dir)
        if self.job_dirs:  # not the dirs an earlier, larger sweep left under the same name
            rows = [r for r in rows if str(Path(r["run_dir"])) in self.job_dirs]
        if not rows:
            return
        path = sweep_dir / self.filename
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        best = max(rows, key=lambda r: -1.0 if r["best_mean_dice"] is None else r["best_mean_dice"])
        print(f"Sweep summary of {len(rows)} jobs: {path} (best mean Dice "
              f"{best['best_mean_dice']} in {best['job']})")  # fmt: skip
