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


def _run(tmp_path, name: str, *extra: str):
    result = cli([*TINY, "trainer.max_epochs=1", f"run_name={name}", *extra], tmp_path)
    assert result.code == 0, result.stderr[-3000:]
    return tmp_path / "runs" / name


def _hydra_files(run_dir) -> dict:
    return {p.name: p.read_bytes() for p in (run_dir / ".hydra").glob("*.yaml")}


def test_a_resume_refuses_new_values_for_what_it_restores_and_lists_the_rest(tmp_path):
    """The optimizer's state would silently keep the old learning rate, and a wider network
    would not load: both are refused naming the key, and the refused override is not recorded
    in the run (its next resume would replay it). Other changes apply and are listed."""
    run = _run(tmp_path, "r")
    recorded, metrics = _hydra_files(run), (run / "metrics.csv").read_bytes()
    before = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    for change, key in [("optimizer.lr=1e-4", "optimizer.lr"),
                        ("model.features=[4,8,16,32]", "model.features")]:  # fmt: skip
        result = cli([f"trainer.resume={run}", "trainer.max_epochs=2", change], tmp_path)
        assert result.code == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert result.stderr.startswith("error: trainer.resume:") and f"  - {key}:" in result.stderr
        assert _hydra_files(run) == recorded and (run / "metrics.csv").read_bytes() == metrics
    extended = cli([f"trainer.resume={run}", "trainer.max_epochs=2", "data.batch_size=1"], tmp_path)
    assert extended.code == 0, extended.stderr[-3000:]
    assert "Resuming with changed settings:" in extended.stdout
    assert "data.batch_size: 2 -> 1" in extended.stdout
    assert "trainer.max_epochs: 1 -> 2" in extended.stdout
    # The extension trains: the schedule spans the new 6 steps instead of the saved 3, whose
    # learning rate had already decayed to zero.
    assert "Learning-rate schedule: 3 -> 6 steps." in extended.stdout
    after = load_checkpoint(run / "checkpoints" / "last.pt")
    assert after["scheduler"]["lr_lambdas"][0]["total_steps"] == 6
    assert any(not torch.equal(before[k], v) for k, v in after["model"].items())


def test_a_resume_refuses_another_fold_or_epoch_length_saying_why():
    """A resume with data.fold=1 trained on fold 0's training cases (fold 1's validation cases
    among them) and crossval counted it as fold 1; a new steps_per_epoch left an empty epoch
    and ended the run early. Both are refused, each group with its reason."""
    from hybrid_unet.config.errors import ConfigError
    from hybrid_unet.engine.resume import check_resume_config

    old = {"data": {"fold": 0, "batch_size": 2}, "trainer": {"steps_per_epoch": 10},
           "optimizer": {"lr": 1e-3}}  # fmt: skip
    new = {"data": {"fold": 1, "batch_size": 2}, "trainer": {"steps_per_epoch": 3},
           "optimizer": {"lr": 1e-2}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        check_resume_config(old, new, "run/last.pt")
    first, split, epoch = info.value.problems
    assert "restores its network" in first and "  - optimizer.lr: 0.001" in first
    assert "another fold would validate on cases it trained on" in split
    assert "  - data.fold: 0 in the checkpoint, 1 now" in split
    assert "raise trainer.max_epochs" in epoch and "  - trainer.steps_per_epoch: 10" in epoch
    new = {**old, "data": {"fold": 0, "batch_size": 4}}
    assert check_resume_config(old, new, "run/last.pt") == ["  data.batch_size: 2 -> 4"]


def test_a_new_run_never_trains_over_an_existing_one(tmp_path):
    run = _run(tmp_path, "r")
    recorded, metrics = _hydra_files(run), (run / "metrics.csv").read_bytes()
    again = cli([*TINY, "trainer.max_epochs=1", "run_name=r", "seed=5"], tmp_path)
    assert again.code == 2, again.stderr[-3000:]
    assert f"{run} already holds a run" in again.stderr and f"trainer.resume={run}" in again.stderr
    assert _hydra_files(run) == recorded and (run / "metrics.csv").read_bytes() == metrics


def test_a_resume_cleans_temporaries_and_a_restart_logs_no_step_twice(tmp_path):
    import subprocess
    import sys

    run = _run(tmp_path, "r")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    torn = run / f".tmp-{dead}-metrics.csv"
    torn.write_text("step,train_loss\n3,")
    for ckpt in (run / "checkpoints").glob("*.pt"):  # as if killed in the first save
        ckpt.write_bytes(b"torn")
    restart = cli([f"trainer.resume={run}"], tmp_path)  # the run dir form: nothing readable
    assert restart.code == 2 and "no readable checkpoint" in restart.stderr
    auto = cli([*TINY, "trainer.max_epochs=1", "run_name=r", "trainer.resume=auto"], tmp_path)
    assert auto.code == 0, auto.stderr[-3000:]
    assert "trainer.resume=auto: no readable checkpoint" in auto.stdout
    assert not torn.exists()
    assert [r["step"] for r in _rows(run)] == ["3"]  # the first attempt's row was dropped


def test_sigterm_during_start_up_exits_with_a_line_and_no_checkpoint(tmp_path, monkeypatch):
    import os
    import signal

    from hybrid_unet.engine import build

    real = build.build_data

    def build_then_sigterm(*args, **kwargs):
        data = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # as if preempted while the data were prepared
        return data

    monkeypatch.setattr(build, "build_data", build_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    result = cli([*TINY, "trainer.max_epochs=1", "run_name=r"], tmp_path)
    assert result.code == 143, result.stderr[-3000:]
    assert "SIGTERM received outside training: exiting" in result.stderr
    assert not list((tmp_path / "runs").rglob("*.pt"))
    assert not (tmp_path / "runs" / "r").exists()  # no empty run dir left (.hydra, train.log)
    assert signal.getsignal(signal.SIGTERM) is before  # the entry point put its handler back


def test_a_run_stopped_by_sigterm_saves_and_exits_143(tmp_path, monkeypatch):
    """Saved and resumable, but not finished: exit 0 let `train && predict` go on with a
    half-trained model and let a scheduler mark the job completed."""
    from tests.helpers import sigterm_after_step

    sigterm_after_step(monkeypatch, 2)
    result = cli([*TINY, "trainer.max_epochs=2", "run_name=r"], tmp_path)
    assert result.code == 143, result.stderr[-3000:]
    assert "Stopped by SIGTERM at step 2" in result.stdout and "trainer.resume=" in result.stdout
    assert "Not finished (resumable)" in result.stdout and "Traceback" not in result.stderr
    log = (tmp_path / "runs" / "r" / "train.log").read_text()  # what it printed stays with it
    assert "Training in" in log and "Stopped by SIGTERM at step 2" in log
    monkeypatch.undo()
    resumed = cli([*TINY, "trainer.max_epochs=2", "run_name=r",
                   f"trainer.resume={tmp_path / 'runs' / 'r'}"], tmp_path)  # fmt: skip
    assert resumed.code == 0 and "Done: best mean Dice" in resumed.stdout, resumed.stderr[-3000:]


def test_a_run_with_the_users_own_config_groups_resumes_without_repeating_the_search_path(
    tmp_path,
):
    """Hydra records ``hydra.searchpath`` in ``hydra.yaml``, not with the run's overrides."""
    own = tmp_path / "myconf" / "loss"
    own.mkdir(parents=True)
    (own / "half_ce.yaml").write_text(
        "_target_: hybrid_unet.losses.compound.DiceCELoss\nce_weight: 0.5\n"
    )
    search = f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"
    run = _run(tmp_path, "own", search, "loss=half_ce")
    resumed = cli([f"trainer.resume={run}", "trainer.max_epochs=2"], tmp_path)
    assert resumed.code == 0, resumed.stderr[-3000:]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["loss"]["ce_weight"] == 0.5


def test_resuming_a_run_that_saved_no_checkpoint_says_so(tmp_path):
    from hybrid_unet.engine.trainer import resolve_resume

    (tmp_path / "killed" / ".hydra").mkdir(parents=True)  # killed before its first epoch ended
    with pytest.raises(FileNotFoundError, match=r"saved no checkpoint .* without trainer\.resume"):
        resolve_resume(str(tmp_path / "killed"), tmp_path / "new")
    (tmp_path / "killed" / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="no readable checkpoint in"):
        resolve_resume(str(tmp_path / "killed"), tmp_path / "new")
