"""A multirun gives one run dir per job and a summary table; re-running it skips or resumes."""

from __future__ import annotations

import csv

import pytest

from tests.helpers import TINY, cli

pytestmark = pytest.mark.slow

# Job dirs named by number: config.yaml's default (number and every override) outgrows the
# 255-character file-name limit with this many overrides.
SWEEP = ["-m", "run_name=grid", "hydra.sweep.subdir=${hydra:job.num}", "loss=dice_ce,dice_focal", "optimizer.lr=1e-3,3e-3",
         *TINY, "trainer.max_epochs=1", "data.max_val_cases=1"]  # fmt: skip


def test_grid_sweep_tabulates_and_a_rerun_skips_or_resumes(tmp_path):
    first = cli(SWEEP, tmp_path)
    assert first.code == 0, first.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "multirun" / "grid"
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1", "2", "3"]
    assert all((j / "summary.json").exists() for j in jobs)
    with open(sweep_dir / "sweep_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == [j.name for j in jobs]
    assert "loss=dice_ce" in rows[0]["overrides"] and "optimizer.lr=" in rows[0]["overrides"]
    assert all(0.0 <= float(r["best_mean_dice"]) <= 1.0 for r in rows)

    # Job 2 was cut short: no summary. The same command resumes it and skips the others.
    (jobs[2] / "summary.json").unlink()
    again = cli(SWEEP, tmp_path)
    assert again.code == 0, again.stderr[-3000:]
    assert again.stdout.count("finished before (summary.json)") == 3
    assert f"Resumed from {jobs[2] / 'checkpoints'}" in again.stdout
    assert (jobs[2] / "summary.json").exists()
    assert sorted(p for p in sweep_dir.iterdir() if p.is_dir()) == jobs  # no new dirs


def test_a_changed_sweep_never_takes_another_jobs_results(tmp_path):
    """Job dirs are numbered: reordering or adding values maps a number to other settings.
    Such a dir is refused before any job starts (its recorded overrides, the sweep's table
    and multirun.yaml left as they were) instead of being skipped as finished under the new
    settings, and a smaller re-run tabulates only its own jobs."""
    base = ["-m", "run_name=s", *TINY, "trainer.max_epochs=1", "data.max_val_cases=1"]
    first = cli([*base, "loss=dice_ce,dice_focal"], tmp_path)
    assert first.code == 0, first.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "multirun" / "s"
    recorded = (sweep_dir / "0" / ".hydra" / "overrides.yaml").read_text()
    records = [(sweep_dir / n).read_bytes() for n in ("sweep_summary.csv", "multirun.yaml")]
    swapped = cli([*base, "loss=dice_ce,ce"], tmp_path)  # job 0 as before, job 1 not
    assert swapped.code == 2 and "Traceback" not in swapped.stderr, swapped.stderr[-3000:]
    assert f"{sweep_dir / '1'} holds a sweep job trained with other settings" in swapped.stderr
    assert "no job of the sweep was started" in swapped.stderr
    assert (sweep_dir / "0" / ".hydra" / "overrides.yaml").read_text() == recorded
    # refused before job 0 was skipped: its table and Hydra's record of the sweep stay (the
    # refused sweep rewrote them to its job 0 alone)
    assert [(sweep_dir / n).read_bytes() for n in ("sweep_summary.csv", "multirun.yaml")] == records
    smaller = cli([*base, "loss=dice_ce"], tmp_path)
    assert smaller.code == 0, smaller.stderr[-3000:]
    assert smaller.stdout.count("finished before (summary.json)") == 1
    with open(sweep_dir / "sweep_summary.csv") as f:
        assert [r["job"] for r in csv.DictReader(f)] == ["0"]


def _signal_in_second_step(monkeypatch, sig) -> None:
    """The trainer's second step sends ``sig`` to this process (as a scheduler would)."""
    import os

    from hybrid_unet.engine import trainer as trainer_module

    real_step, calls = trainer_module.train_step, []

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), sig)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", step_then_signal)


def test_a_stop_signal_stops_the_whole_sweep(tmp_path, monkeypatch):
    import signal

    _signal_in_second_step(monkeypatch, signal.SIGTERM)
    result = cli(["-m", "run_name=stop", *TINY, "trainer.max_epochs=1", "loss=dice_ce,dice"],
                 tmp_path)  # fmt: skip
    assert result.code == 143, result.stderr[-3000:]
    assert "Stopped by SIGTERM at step 2" in result.stdout
    assert "The sweep stops here" in result.stdout
    sweep_dir = tmp_path / "runs" / "multirun" / "stop"
    assert (sweep_dir / "0" / "checkpoints" / "last.pt").exists()
    assert not (sweep_dir / "1").exists()  # the second job never started
    with open(sweep_dir / "sweep_summary.csv") as f:  # the stopped job's row, unfinished
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["complete"], r["epochs"]) for r in rows] == [("0", "False", "0")]


def test_a_diverging_job_is_one_result_of_the_sweep_not_its_end(tmp_path):
    """A learning rate that diverges used to end the sweep (exit 2) before the next job, and
    every re-run resumed it, diverged again and stopped there: the later jobs never ran."""
    args = ["-m", "run_name=div", *TINY, "trainer.max_epochs=1", "trainer.max_bad_steps=2",
            "data.max_val_cases=1", "optimizer.lr=1e9,1e-3"]  # fmt: skip
    result = cli(args, tmp_path)
    assert result.code == 0, result.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "multirun" / "div"
    assert "div/0: training diverged" in result.stderr and "the sweep goes on" in result.stderr
    with open(sweep_dir / "sweep_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1"]
    assert rows[0]["stop_reason"].startswith("training diverged") and rows[0]["complete"] == "True"
    assert 0.0 <= float(rows[1]["best_mean_dice"]) <= 1.0 and not rows[1]["stop_reason"]
    again = cli(args, tmp_path)
    assert again.code == 0 and again.stdout.count("finished before (summary.json)") == 2


def test_a_single_run_that_diverges_keeps_its_run_dir_and_log(tmp_path):
    """Outside a sweep divergence is the run's error (exit 2), but the run trained: its
    train.log and metrics stay (the dir used to be removed as one that did no work)."""
    args = ["run_name=div", *TINY, "trainer.max_epochs=1", "trainer.max_bad_steps=2",
            "data.max_val_cases=1", "optimizer.lr=1e9"]  # fmt: skip
    result = cli(args, tmp_path)
    assert result.code == 2 and "training diverged" in result.stderr
    log = tmp_path / "runs" / "div" / "train.log"
    assert log.is_file() and "Traceback" not in result.stderr


def test_the_objective_is_never_nan():
    from hybrid_unet.train import objective

    assert objective({"best_mean_dice": None}) == 0.0  # Optuna crashes on a NaN value
    assert objective({"best_mean_dice": 0.25}) == 0.25


def test_a_rerun_job_reads_its_checkpoint_once(tmp_path):
    """The job check and the resume each read (and CRC-checked) the newest checkpoint: twice the
    time, and a damaged last.pt warned twice. (The sweep's check before its first job reads
    it too, quietly: a changed sweep must be refused before any job writes.)"""
    import shutil

    args = ["-m", "run_name=once", *TINY, "trainer.max_epochs=1", "data.max_val_cases=1"]
    assert cli(args, tmp_path).code == 0
    job = tmp_path / "runs" / "multirun" / "once" / "0"
    (job / "summary.json").unlink()  # cut short
    last = job / "checkpoints" / "last.pt"
    shutil.copy(last, job / "checkpoints" / "last-prev.pt")
    last.write_bytes(last.read_bytes()[:1000])
    again = cli(args, tmp_path)
    assert again.code == 0, again.stderr[-3000:]
    assert again.stderr.count(f"skipping unreadable checkpoint {last}") == 1
    assert f"Resumed from {job / 'checkpoints' / 'last-prev.pt'}" in again.stdout


def test_slurm_pre_timeout_signal_saves_before_submitit_requeues(tmp_path, monkeypatch):
    """Under the submitit launcher SLURM sends SIGUSR2 ``signal_delay_s`` before the limit and
    submitit's handler requeues and exits at once: mid-step, with the steps since the last
    epoch's last.pt lost. The loop now takes the signal, saves, then hands it on."""
    import signal

    from hybrid_unet.engine.checkpoint import load_checkpoint

    job = tmp_path / "runs" / "multirun" / "usr2" / "0"
    requeued = []

    def submitit_requeue(signum, frame):  # what submitit's handler does: requeue, then exit
        last = job / "checkpoints" / "last.pt"
        requeued.append(load_checkpoint(last)["meta"]["step"] if last.exists() else None)
        raise SystemExit(-1)

    _signal_in_second_step(monkeypatch, signal.SIGUSR2)
    previous = signal.signal(signal.SIGUSR2, submitit_requeue)
    try:
        result = cli(["-m", "run_name=usr2", *TINY, "trainer.max_epochs=1"], tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert requeued == [2], result.stderr[-3000:]  # called once, after step 2 was saved
    assert "Stopped by SIGUSR2 at step 2" in result.stdout
    assert result.code == -1


def test_a_bad_swept_value_is_refused_before_any_job_trains(tmp_path):
    """``optimizer.lr=1e-3,-1`` trained job 0 and then stopped at job 1 (under submitit: "has
    not produced any output")."""
    result = cli(["-m", "run_name=bad", *TINY, "loss=dice_ce,dice", "optimizer.lr=1e-3,-1"],
                 tmp_path)  # fmt: skip
    assert result.code == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "sweep job 1 (loss=dice_ce optimizer.lr=-1): config key 'optimizer.lr'" in result.stderr
    assert "sweep job 3 (loss=dice optimizer.lr=-1)" in result.stderr
    assert "no job of the sweep was started" in result.stderr
    assert not (tmp_path / "runs" / "multirun" / "bad").exists()


def test_the_jobs_of_a_sweep_are_found_under_a_given_hydra_sweep_dir(tmp_path, monkeypatch):
    """A failed command puts back the ``.hydra`` files of the runs it names; with
    ``hydra.sweep.dir=`` the jobs were looked for under ``runs/multirun/<run_name>`` instead,
    so a refused re-run of such a sweep left its jobs' recorded overrides rewritten."""
    from hybrid_unet.train import _named_run_dirs

    monkeypatch.setenv("HYBRID_UNET_RUNS", str(tmp_path / "runs"))
    sweep = tmp_path / "elsewhere"
    for job in ("0", "1"):
        (sweep / job / ".hydra").mkdir(parents=True)
    (sweep / "notes").mkdir()
    argv = ["-m", f"hydra.sweep.dir={sweep}", "run_name=s", "loss=dice,dice_ce"]
    assert _named_run_dirs(argv) == [sweep / "0", sweep / "1"]
    assert _named_run_dirs(["-m", "hydra.sweep.dir=${paths.runs_dir}/x", "run_name=s"]) == []
    assert _named_run_dirs(argv[1:]) == [tmp_path / "runs" / "s"]  # not a sweep: the run dir


def test_a_job_leaves_the_thread_count_as_it_found_it(tmp_path, monkeypatch):
    """Jobs of a sweep run in one process: ``trainer.num_threads=1`` in job 0 used to stay set
    for job 1, which left it null (the machine's default)."""
    import torch

    from hybrid_unet.engine.trainer import Trainer

    seen, real_fit = [], Trainer.fit

    def fit(self):
        seen.append(torch.get_num_threads())
        return real_fit(self)

    monkeypatch.setattr(Trainer, "fit", fit)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = cli(["-m", "run_name=t", *TINY, "trainer.max_epochs=1", "trainer.steps_per_epoch=1",
                      "data.max_val_cases=1", "trainer.num_threads=1,null"], tmp_path)  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert result.code == 0, result.stderr[-3000:]
    assert seen == [1, 2]


def test_a_sweep_that_fails_half_way_keeps_the_rows_of_its_finished_jobs(tmp_path, monkeypatch):
    """Hydra skips the end callback when a job fails, so ``sweep_summary.csv`` was not written
    at all, though job 0 had finished."""
    from hybrid_unet.engine.trainer import Trainer

    real_fit, calls = Trainer.fit, {"n": 0}

    def fit(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("job 1 broke")
        return real_fit(self)

    monkeypatch.setattr(Trainer, "fit", fit)
    result = cli(["-m", "run_name=f", *TINY, "trainer.max_epochs=1", "trainer.steps_per_epoch=1",
                  "data.max_val_cases=1", "loss=dice_ce,dice"], tmp_path)  # fmt: skip
    assert result.code == 1 and "job 1 broke" in result.stderr
    with open(tmp_path / "runs" / "multirun" / "f" / "sweep_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["complete"]) for r in rows] == [("0", "True")]


@pytest.mark.parametrize(("task", "hint"), [
    (["run_name=grid", "loss=dice_ce,ce"], "run the same command again to resume it."),
    (["loss=dice_ce,ce"], "run the same command with run_name=2026-12-03_17-00-00 added"),
])  # fmt: skip
def test_a_stopped_sweep_says_how_to_resume_it(monkeypatch, task, hint):
    """Without run_name the sweep dir is the launch time: "run the same command again" started
    a new sweep and trained its finished jobs again."""
    from types import SimpleNamespace

    from hybrid_unet import train

    hydra = SimpleNamespace(overrides=SimpleNamespace(task=task),
                            sweep=SimpleNamespace(dir="runs/multirun/2026-12-03_17-00-00"))  # fmt: skip
    monkeypatch.setattr(train.HydraConfig, "get", staticmethod(lambda: hydra))
    assert train._sweep_resume_hint().startswith(hint)
