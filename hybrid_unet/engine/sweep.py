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
from typing import Any, ClassVar

import yaml
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from hybrid_unet.atomic import atomic_path

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


def check_same_job(
    run_dir: str | Path, resolved: dict[str, Any], quiet: bool = False
) -> tuple[Path, dict] | None:
    """Refuse a job dir whose newest checkpoint was trained with other settings than ``resolved``
    (values the plan fills later, null in ``resolved``, are not compared). ``quiet``: skip an
    unreadable checkpoint without a warning (the sweep's check before its first job; the job
    itself warns).

    Returns:
        The newest readable checkpoint's path and contents (``None``: none), for the resume,
        so it is read once.

    Raises:
        ConfigError: naming the dir and the first differing keys.
    """
    from hybrid_unet.config.errors import ConfigError
    from hybrid_unet.engine.manager import find_resumable
    from hybrid_unet.engine.resume import NOT_SETTINGS, config_changes

    found = find_resumable(Path(run_dir) / "checkpoints", quiet)
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


_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class SweepCheck(Callback):
    """Hydra callback: before the first job of a grid sweep, compose and check every job's
    config, so a bad value among the swept ones (``optimizer.lr=1e-3,-1``) is refused before
    any job trains (it stopped the sweep when its job came; under submitit the launcher said
    only "has not produced any output"), and so is a job dir trained with other settings
    (:func:`check_same_job`)."""

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        from hybrid_unet.cli import exit_on_user_error
        from hybrid_unet.config.errors import ConfigError

        if config.hydra.sweeper.get("_target_") != _BASIC_SWEEPER:
            return  # a search (Optuna) draws its values as it goes
        problems = sweep_job_problems(config)
        if problems:  # Hydra turns a callback's exception into a warning: exit here
            exit_on_user_error(ConfigError([*problems, "no job of the sweep was started"]))


def sweep_job_problems(config) -> list[str]:
    """Every config problem of every job of a grid sweep, each naming the job and its values."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from hybrid_unet.config.errors import ConfigError
    from hybrid_unet.config.validate import check_config

    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    loader, hydra_config = GlobalHydra.instance().config_loader(), HydraConfig.instance().cfg
    problems = []
    try:
        for number, job in enumerate(jobs):
            cfg = loader.load_configuration(config.hydra.job.config_name, job, RunMode.MULTIRUN)
            with open_dict(cfg):  # what the launcher sets before the job's config resolves
                cfg.hydra.job.num, cfg.hydra.job.id = number, f"check_{number}"
            HydraConfig.instance().set_config(cfg)
            with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
                sweep = cfg.hydra.sweep
                job_dir = Path(sweep.dir) / str(sweep.subdir)
                cfg.hydra.runtime.output_dir = str(job_dir)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]  # a job's task gets its config without it
            try:
                resolved = check_config(cfg)
                # A changed sweep is refused here, before any job skips a dir and rewrites the
                # table (or Hydra the sweep's multirun.yaml), not when the job comes.
                if (job_dir / "checkpoints").is_dir():
                    check_same_job(job_dir, resolved, quiet=True)
            except ConfigError as exc:
                values = " ".join(a for a in job if a.split("=", 1)[0] in swept)
                problems += [f"sweep job {number} ({values}): {p}" for p in exc.problems]
    finally:
        HydraConfig.instance().cfg = hydra_config
    return problems


class SweepSummary(Callback):
    """Hydra callback: ``<sweep dir>/<filename>`` tabulates every job's best metrics.

    With jobs in this process (Hydra's basic launcher) the table is rewritten after every job,
    so a sweep that fails half-way (Hydra then skips the end callback) keeps the rows of the
    jobs that finished before, and a job that a stop signal ends (with the sweep) writes its
    own row through :func:`write_stopped_job`.
    """

    # This process's sweep (basic launcher): a stopped job exits before Hydra's job-end call.
    in_process: ClassVar[SweepSummary | None] = None

    def __init__(self, filename: str = "sweep_summary.csv") -> None:
        self.filename = filename
        self.job_dirs: set[str] = set()  # this launch's jobs (empty when jobs run elsewhere)

    def on_job_start(self, config, **kwargs: Any) -> None:
        in_process = OmegaConf.select(config, "hydra.launcher._target_") == _BASIC_LAUNCHER
        SweepSummary.in_process = self if in_process else None
        self.job_dirs.add(str(Path(config.hydra.runtime.output_dir).resolve()))

    def on_job_end(self, config, job_return: Any, **kwargs: Any) -> None:
        if SweepSummary.in_process is self:
            self._write(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        written = self._write(Path(config.hydra.sweep.dir))
        if written is None:
            return
        path, rows = written
        best = max(rows, key=lambda r: -1.0 if r["best_mean_dice"] is None else r["best_mean_dice"])
        dice = "n/a" if best["best_mean_dice"] is None else f"{best['best_mean_dice']:.4f}"
        print(f"Sweep summary of {len(rows)} jobs: {path} (best mean Dice {dice} in "
              f"{best['job']})")  # fmt: skip

    def _write(self, sweep_dir: Path) -> tuple[Path, list[dict[str, Any]]] | None:
        rows = sweep_rows(sweep_dir)
        if self.job_dirs:  # not the dirs an earlier, larger sweep left under the same name
            # resolved: the job's output_dir is absolute, a relative runs_dir ("runs") is not
            rows = [r for r in rows if str(Path(r["run_dir"]).resolve()) in self.job_dirs]
        if not rows:
            return None
        path = sweep_dir / self.filename
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return path, rows


def write_stopped_job(sweep_dir: str | Path) -> None:
    """Rewrite the in-process sweep's table with the job a stop signal ends (its summary.json
    says ``complete: false``): Hydra skips the job-end callback for a job that exits."""
    if SweepSummary.in_process is not None:
        SweepSummary.in_process._write(Path(sweep_dir))
