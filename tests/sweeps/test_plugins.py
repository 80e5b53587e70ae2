"""Optuna search and the submitit launcher (the optional `sweep` extra)."""

from __future__ import annotations

import csv

import pytest
import yaml

from tests.helpers import REPO, TINY, run_train

pytestmark = pytest.mark.slow
# Job dirs named by number: overrides would make over-long dir names (see test_multirun).
SMALL = [*TINY, "hydra.sweep.subdir=${hydra:job.num}", "trainer.max_epochs=1",
         "data.max_val_cases=1"]  # fmt: skip


def _search_override() -> str:
    """``hparams_search=optuna`` once config.yaml lists the group, ``+...`` before."""
    listed = "hparams_search" in (REPO / "conf" / "config.yaml").read_text()
    return "hparams_search=optuna" if listed else "+hparams_search=optuna"


def test_optuna_runs_three_trials_and_tabulates_them(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = run_train(
        ["-m", _search_override(), "run_name=search", "hydra.sweeper.n_trials=3", *SMALL], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "multirun" / "search"
    with open(sweep_dir / "sweep_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1", "2"]
    lrs = {r["overrides"] for r in rows}
    assert len(lrs) == 3 and all("optimizer.lr=" in r for r in lrs)
    assert (sweep_dir / "optimization_results.yaml").exists()  # Optuna's best trial


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module

    with initialize_config_module(version_base="1.3", config_module="hybrid_unet.conf"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.max_num_timeout == 3 and launcher.gpus_per_node == 1


def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = run_train(
        ["-m", "hydra/launcher=submitit_local", "run_name=local", "optimizer.lr=1e-3,3e-3",
         *SMALL], tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "multirun" / "local"
    assert all((sweep_dir / str(n) / "summary.json").exists() for n in (0, 1))
    assert (sweep_dir / "sweep_summary.csv").exists()


def test_optuna_records_a_diverging_trial_and_searches_on(tmp_path):
    """A diverging trial ended the whole search (exit 2); one without a validation handed
    Optuna NaN, on which the sweeper crashed with a ValueError traceback."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from tests.helpers import cli

    space = tmp_path / "conf" / "hparams_search"
    space.mkdir(parents=True)
    (space / "diverge.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n"
        "hydra:\n  sweeper:\n    direction: maximize\n    n_trials: 3\n    sampler:\n"
        "      seed: 1\n    params:\n      optimizer.lr: choice(1e-3, 1e9)\n"
    )
    result = cli(["-m", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                  "hparams_search=diverge", "run_name=div", *SMALL, "trainer.max_bad_steps=2"],
                 tmp_path)  # fmt: skip
    assert result.code == 0, result.stderr[-3000:]
    assert "training diverged" in result.stderr
    sweep_dir = tmp_path / "runs" / "multirun" / "div"
    with open(sweep_dir / "sweep_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and any(r["stop_reason"] for r in rows)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"]["optimizer.lr"] == 1e-3
    assert best["best_value"] == max(float(r["best_mean_dice"] or 0) for r in rows)


def test_a_failed_submitit_job_is_reported_with_its_own_error_line(tmp_path):
    """submitit says of a job that exited on an error only that it "has not produced any
    output" (its message, as submitit_local printed it); the job's log holds the reason."""
    from hybrid_unet.train import _launcher_failure

    folder = tmp_path / ".submitit" / "28089"
    folder.mkdir(parents=True)
    log = folder / "28089_0_log.err"
    log.write_text("[HYDRA] setting up\nerror: /data/w.pt: checkpoint not found\n")
    failure = RuntimeError(f"Job 28089 (task: 0) with path {folder}/28089_0_result.pkl has not "
                           "produced any output (state: FINISHED)")  # fmt: skip
    assert _launcher_failure(failure) == (
        f"a sweep job failed: /data/w.pt: checkpoint not found (its log: {log})"
    )
    log.unlink()  # no log to read: submitit's own words
    assert _launcher_failure(failure).startswith("the sweep's launcher failed: Job 28089")
