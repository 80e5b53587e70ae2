"""Train a network: ``python -m hybrid_unet.train [+preset=NAME] [group=option] [key=value]``.

Resume a run with ``trainer.resume=<run dir>``: the run's own overrides are replayed, the new
ones win, and the run continues in its own dir.

Sweeps: ``python -m hybrid_unet.train -m run_name=NAME loss=dice_ce,dice_focal
optimizer.lr=1e-3,3e-3`` runs one job per combination in ``<runs>/multirun/NAME/`` and writes
``sweep_summary.csv`` there. Running the same command again skips finished jobs and resumes
the others from their checkpoints (give ``run_name``: the default is a timestamp).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hybrid_unet.atomic import atomic_write_json, atomic_write_text
from hybrid_unet.cli import exit_on_user_error as _exit_on_user_error
from hybrid_unet.config.errors import ConfigError, describe_exception
from hybrid_unet.config.schema import register_configs
from hybrid_unet.config.validate import check_config
from hybrid_unet.engine.signals import exit_on_sigterm
from hybrid_unet.engine.sweep import check_same_job, finished_summary, write_stopped_job

register_configs()
# Hydra imports every installed plugin; the Optuna sweeper's import logs alembic set-up at INFO.
logging.getLogger("alembic").setLevel(logging.WARNING)
# What a run writes before its first step (the TensorBoard logger's folder included, created
# when the loggers start): a run dir holding only these did no work.
_NO_WORK = {".hydra", "train.log", "splits.json", "plan.json", "tensorboard"}
_composed: list[bool] = []  # set once Hydra composed the config and our task started


@hydra.main(version_base="1.3", config_path="pkg://hybrid_unet.conf", config_name="config")
def train(cfg: DictConfig) -> float:
    """Hydra task: check the config, train, return the best mean Dice (what sweepers optimise)."""
    import torch

    # trainer.num_threads sets the process's thread count: the next job of an in-process sweep
    # (one that leaves it null) starts from the count this one found.
    threads = torch.get_num_threads()
    log = Path(HydraConfig.get().runtime.output_dir) / "train.log"
    tee = _Tee(sys.stdout, log) if os.environ.get("RANK", "0") == "0" else None
    try:
        with contextlib.redirect_stdout(tee) if tee else contextlib.nullcontext():
            return _train(cfg)
    finally:
        torch.set_num_threads(threads)
        if tee:
            tee.close()


class _Tee(io.TextIOBase):
    """Stdout that also appends to the run's ``train.log`` (beside Hydra's own log lines):
    the plan, the epoch lines and the summary stay with the run. Progress-bar frames (``\r``)
    go to the terminal only."""

    def __init__(self, stream, path: Path) -> None:
        self.stream, self.file = stream, open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, text: str) -> int:
        self.stream.write(text)
        if "\r" not in text and not self.file.closed:
            self.file.write(text)
            self.file.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def close(self) -> None:
        self.file.close()


def _train(cfg: DictConfig) -> float:
    from hybrid_unet.engine.step import TrainingDiverged
    from hybrid_unet.engine.trainer import Trainer

    _composed.append(True)

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun and cfg.trainer.resume is None and (run_dir / "checkpoints").is_dir():
        cfg.trainer.resume = "auto"  # a re-run sweep picks up where it was
    trainer = None
    try:
        if cfg.trainer.resume is None and _checkpoints(run_dir):  # never train over a run
            raise ConfigError([f"{run_dir} already holds a run ({_checkpoints(run_dir)[0].name}): "
                               f"continue it with trainer.resume={run_dir}, or choose another "
                               "run dir"])  # fmt: skip
        resolved = check_config(cfg)
        checkpoint = None  # a re-run sweep job's checkpoint, read once
        if multirun:
            checkpoint = check_same_job(run_dir, resolved)
            done = finished_summary(run_dir)
            if done is not None:
                print(f"Skipping {run_dir}: finished before (summary.json).")
                return objective(done)
        try:
            trainer = Trainer(resolved, run_dir, resume_from=checkpoint)
        except ValueError as exc:  # constructors validate their arguments
            raise ConfigError([f"invalid configuration: {exc}"]) from exc
        try:
            summary = trainer.fit()
        except TrainingDiverged as exc:
            if not multirun:
                raise
            return _diverged_job(trainer, exc)
        trainer.close()
        if multirun and trainer.stopping:  # a stop signal stops the sweep, not just this job
            write_stopped_job(HydraConfig.get().sweep.dir)
            print(f"The sweep stops here; {_sweep_resume_hint()}")
            raise SystemExit(130 if trainer.stopped_by == "SIGINT" else 143)
    except BaseException as exc:  # SystemExit too: a signal that ends the start-up
        if trainer is None or trainer.state.step == 0:  # a run that trained keeps its log
            _discard_if_empty(run_dir)
        if isinstance(exc, Exception):
            # Caught here, not only in main(): Hydra prints an extra line for a failing job.
            _exit_on_user_error(exc)
        raise
    if not summary:  # a data-parallel rank other than 0
        return float("nan")
    print(summary_lines(summary))
    if trainer.stopping:  # saved and resumable, but not done: `train && predict` must not go on
        raise SystemExit(130 if trainer.stopped_by == "SIGINT" else 143)
    return objective(summary)


def objective(summary: dict) -> float:
    """What a sweeper optimises: the best validation mean Dice, 0.0 (the worst) for a run
    that has none (it diverged before validating). Never NaN: the Optuna sweeper crashes on a
    NaN objective instead of recording a failed trial."""
    best = summary["best_mean_dice"]
    return 0.0 if best is None else float(best)


def _diverged_job(trainer, exc: Exception) -> float:
    """A sweep job whose training diverged is one result of the sweep, not the sweep's end:
    it is recorded as finished (a re-run skips it; resuming would diverge again) with its
    reason, and ranks by the best mean Dice it reached before diverging."""
    trainer.state.stop_reason = str(exc)
    summary = {**trainer.summary(), "complete": True}
    atomic_write_json(trainer.run_dir / "summary.json", summary)
    print(f"warning: {trainer.run_dir}: {exc}; this job counts with mean Dice "
          f"{objective(summary):.4f} and the sweep goes on", file=sys.stderr)  # fmt: skip
    return objective(summary)


def _sweep_resume_hint() -> str:
    """How to resume this sweep: the same command, which must name the sweep's dir (a default
    run_name is the launch time, so the same command would start a new sweep)."""
    hydra = HydraConfig.get()
    if any(_override_key(o) == "run_name" for o in hydra.overrides.task):
        return "run the same command again to resume it."
    return (f"run the same command with run_name={Path(hydra.sweep.dir).name} added to resume "
            "it (without it, a new sweep starts).")  # fmt: skip


def summary_lines(summary: dict) -> str:
    """The closing lines of a run: best metrics, cost, time."""
    best = summary["best_mean_dice"]
    best_text = "n/a" if best is None else f"{best:.4f}"
    flops = summary.get("flops_per_patch")
    flops_text = "n/a" if flops is None else f"{flops / 1e9:.2f} GFLOP"
    monitored = summary["best_metric"]
    head = "Done" if summary.get("complete", True) else "Not finished (resumable)"
    at = f"at epoch {summary['best_epoch']}"
    if summary["monitor"] != "mean_dice":  # the checkpoint kept as best.pt follows the monitor
        value = "n/a" if monitored is None else f"{monitored:.4f}"
        at = f"(best {summary['monitor']} {value} {at})"
    epochs = summary["epochs"]
    result = f"best mean Dice {best_text} {at}"
    if best is None and monitored is None and summary["best_epoch"] < 0:
        result = "no validation yet"  # stopped before its first validation
    lines = [
        f"{head}: {result}, {epochs} epoch{'s' * (epochs != 1)} in "
        f"{summary['train_seconds']:.0f} s; run dir {summary['run_dir']}",
        f"  parameters {summary['parameters']:,}, forward {flops_text} per patch, "
        f"peak memory {summary['peak_memory_mb']:.0f} MB, {summary['seconds_per_epoch']:.1f} s "
        f"per epoch, {summary['train_seconds']:.0f} s compute in all",
    ]
    return "\n".join(lines)


def _checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return sorted(folder.glob("[!.]*.pt")) if folder.is_dir() else []


class _RunFilesGuard:
    """Hydra rewrites ``.hydra/`` of an existing run dir (a resume, a new run pointed at an old
    one, a re-run sweep's jobs) before the run starts; if the command then fails, :meth:`restore`
    puts the old files back in every dir whose ``last.pt`` it did not change, so a refused
    override does not become part of a run and spoil its next resume."""

    def __init__(self, argv: list[str]) -> None:
        self.saved = {}
        for run_dir in _named_run_dirs(argv):
            files = {p: p.read_bytes() for p in (run_dir / ".hydra").glob("*.yaml")}
            if files:
                self.saved[run_dir] = (files, _last_checkpoint(run_dir))

    def restore(self) -> None:
        for run_dir, (files, last) in self.saved.items():
            if _last_checkpoint(run_dir) == last:
                for path, content in files.items():
                    atomic_write_text(path, content.decode())


def _last_checkpoint(run_dir: Path) -> tuple | None:
    path = run_dir / "checkpoints" / "last.pt"
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def _named_run_dirs(argv: list[str]) -> list[Path]:
    """The existing run dirs a command names, when they can be told without composing the
    config: ``hydra.run.dir``, or a sweep's ``hydra.sweep.dir`` (its jobs), or ``run_name``
    under ``paths.runs_dir``."""
    given = {_override_key(a): a.split("=", 1)[1] for a in argv if "=" in a}
    multirun = any(a in ("-m", "--multirun") for a in argv)
    runs = given.get("paths.runs_dir", os.environ.get("HYBRID_UNET_RUNS", "runs"))
    if "hydra.run.dir" in given and not multirun:
        return [Path(given["hydra.run.dir"])]
    if multirun and "hydra.sweep.dir" in given:
        sweep = Path(given["hydra.sweep.dir"])
    elif "run_name" not in given or "${" in runs + given["run_name"]:
        return []
    elif not multirun:
        return [Path(runs) / given["run_name"]]
    else:
        sweep = Path(runs) / "multirun" / given["run_name"]
    if "${" in str(sweep) or not sweep.is_dir():
        return []
    return sorted(p.parent for p in sweep.glob("*/.hydra"))


def _launcher_failure(exc: BaseException) -> str:
    """What a remote launcher's failure says, with the job's own error line where its log holds
    one: submitit reports a job that exited on an error only as "has not produced any output"."""
    text = describe_exception(exc)
    found = re.search(r"(\S+)_result\.pkl", text)  # .submitit/<id>/<id>_<task>_result.pkl
    log = Path(f"{found.group(1)}_log.err") if found else None
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines()] if log else []
    except OSError:
        lines = []
    errors = [x for x in lines if x.startswith("error:")] or [x for x in lines if x]
    if not errors:
        return f"the sweep's launcher failed: {text}"
    return f"a sweep job failed: {errors[-1].removeprefix('error:').strip()} (its log: {log})"


def _discard_if_empty(run_dir: Path) -> None:
    """Remove a run dir that holds nothing but what a run writes before it starts training."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= _NO_WORK:
        shutil.rmtree(run_dir, ignore_errors=True)


def resume_argv(argv: list[str]) -> list[str]:
    """Rewrite ``trainer.resume=<run dir or its checkpoint>`` into a continuation of that run.

    The run's recorded overrides come first and the new ones after (a key given again takes
    the new value), and Hydra's run dir is pinned to the old run's dir.
    """
    value = next((a.split("=", 1)[1] for a in argv if a.startswith("trainer.resume=")), None)
    if not value or value == "auto":
        return argv
    path = Path(value)
    run_dir = path.parent.parent if path.is_file() and path.parent.name == "checkpoints" else path
    recorded = run_dir / ".hydra" / "overrides.yaml"
    if not (run_dir.is_dir() and recorded.exists()):
        return argv  # a bare checkpoint: resume into a new run dir
    try:  # safe_load: a crafted overrides.yaml cannot construct Python objects
        recorded_args = yaml.safe_load(recorded.read_text()) or []
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError([f"{recorded}: not a plain list of overrides ({first})"]) from None
    if not isinstance(recorded_args, list) or not all(isinstance(a, str) for a in recorded_args):
        raise ConfigError([f"{recorded}: expected a list of override strings"])
    new_keys = {_override_key(a) for a in argv}
    recorded_args += _recorded_search_path(run_dir)
    old = [a for a in recorded_args if _override_key(a) not in new_keys]
    old = [a for a in old if _override_key(a) not in ("trainer.resume", "hydra.run.dir")]
    return with_overrides(argv, before=old, after=[f"hydra.run.dir={run_dir}"])


def _recorded_search_path(run_dir: Path) -> list[str]:
    """The run's ``hydra.searchpath`` override: Hydra records it in ``hydra.yaml``, not in
    ``overrides.yaml``, and a run that used the user's own config groups needs it to resume."""
    try:
        node = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        given = node["hydra"]["overrides"]["hydra"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    return [a for a in given if isinstance(a, str) and _override_key(a) == "hydra.searchpath"]


def sweep_argv(argv: list[str]) -> list[str]:
    """A multirun gets the sweep-summary callback unless ``hydra/callbacks`` is chosen."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if multirun and not any(_override_key(a).startswith("hydra/callbacks") for a in argv):
        return with_overrides(argv, after=["hydra/callbacks=sweep_summary"])
    return argv


def torchrun_argv(argv: list[str]) -> list[str]:
    """Under torchrun every rank runs Hydra: give them one run dir, and let only rank 0 write.

    ``run_name`` defaults to ``TORCHELASTIC_RUN_ID``, which plain ``torchrun`` (without
    ``--standalone`` or ``--rdzv-id``) leaves at ``none``; then the ranks, children of one
    torchrun agent, name the run after its process id.
    """
    if "LOCAL_RANK" not in os.environ:
        return argv
    extra = []
    named = any(_override_key(a) == "run_name" for a in argv)
    if not named and os.environ.get("TORCHELASTIC_RUN_ID", "none") == "none":
        extra.append(f"run_name=torchrun-{time.strftime('%Y-%m-%d')}-{os.getppid()}")
    if os.environ.get("RANK", "0") != "0":  # Hydra would write .hydra/ and train.log too
        extra += ["hydra.output_subdir=null", "hydra/job_logging=disabled",
                  "hydra/hydra_logging=disabled"]  # fmt: skip
    return with_overrides(argv, after=extra)


# Hydra's flags that take the next argument as their value (``--info`` only when it is one of
# its topics).
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                "-cn", "--config-dir", "-cd", "--experimental-rerun"}  # fmt: skip
_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def with_overrides(argv: list[str], before: list[str] = (), after: list[str] = ()) -> list[str]:
    """Add overrides to a command line next to the user's own, ``before`` them or ``after``.

    Hydra reads the overrides as one run of positional arguments: an override appended after a
    flag such as ``--cfg job`` would be rejected ("unrecognized arguments").
    """
    positions, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_FLAGS or (
            arg in ("--info", "-i") and argv[i + 1 : i + 2] and argv[i + 1] in _INFO_TOPICS
        ):
            i += 2
            continue
        if not arg.startswith("-"):
            positions.append(i)
        i += 1
    if not positions:  # only flags: the overrides go first
        return [*before, *after, *argv]
    start = end = positions[0]
    while end + 1 in positions:
        end += 1
    return [*argv[:start], *before, *argv[start : end + 1], *after, *argv[end + 1 :]]


def _override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def main() -> None:
    """Console entry: run Hydra, turning config and input errors into one readable message."""
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if user_wants_traceback:
        os.environ["HYBRID_UNET_TRACEBACK"] = "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's printer
    _composed.clear()
    guard = None
    previous_sigterm = exit_on_sigterm()
    try:
        sys.argv = [sys.argv[0], *torchrun_argv(sweep_argv(resume_argv(sys.argv[1:])))]
        guard = _RunFilesGuard(sys.argv[1:])
        train()
    except BaseException as exc:
        if guard is not None:
            guard.restore()
        if not isinstance(exc, Exception):
            raise
        if user_wants_traceback:
            raise
        _exit_on_user_error(exc)
        if not _composed and any(a.startswith("hydra/launcher=") for a in sys.argv):
            # The jobs ran in other processes (SLURM, submitit): this is the launcher's failure
            print(f"error: {_launcher_failure(exc)}", file=sys.stderr)
            raise SystemExit(1) from None
        if not _composed:  # Hydra failed on the overrides themselves (e.g. "loss=0")
            print(f"error: cannot compose the config: {describe_exception(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


if __name__ == "__main__":
    main()
