"""The training loop in-process: every model and loss trains, time budgets, stop signals."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from hybrid_unet.engine import trainer as trainer_module
from hybrid_unet.engine.checkpoint import load_checkpoint
from tests.helpers import REPO, sigterm_after_step, train_in_process

MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
LOSSES = sorted(p.stem for p in (REPO / "conf" / "loss").glob("*.yaml"))
ONE_EPOCH = ["trainer.max_epochs=1", "trainer.steps_per_epoch=2", "data.max_val_cases=1"]
# For tests of many real steps where only their count matters: a 16^3 patch, batch 1, and
# 24^3 cases (8 windows to validate; a time budget validates a case before training too).
SMALL_STEPS = ["data.patch_size=[16,16,16]", "data.batch_size=1", "data.source.shape=[24,24,24]"]


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains(model, tmp_path):
    # SwinUNETR pads the 32^3 patch to 64^3: one block per stage and 4^3 windows (MONAI's
    # 7^3 windows at 64^3 took 30 s for these two steps and one validation case).
    smaller = ["model.feature_size=12", "+model.depths=[1,1,1,1]", "+model.window_size=4"]
    smaller = smaller if model == "swin_unetr" else []
    summary, _ = train_in_process([f"model={model}", *ONE_EPOCH, *smaller], tmp_path)
    assert summary["steps"] == 2 and summary["best_mean_dice"] is not None
    assert (tmp_path / "checkpoints" / "last.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains(loss, tmp_path):
    summary, _ = train_in_process([f"loss={loss}", *ONE_EPOCH], tmp_path)
    assert summary["skipped_steps"] == 0
    assert all(float(r["train_loss"]) == float(r["train_loss"]) for r in _rows(tmp_path))


@pytest.mark.slow
def test_adaptive_loss_weights_reach_csv_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_in_process(["loss=adaptive_schedule", "trainer.max_epochs=2", "trainer.steps_per_epoch=2",
                      "data.max_val_cases=1"], tmp_path)  # fmt: skip
    rows = _rows(tmp_path)
    weight_columns = [k for k in rows[0] if k.startswith("loss/weight/")]
    assert weight_columns, rows[0].keys()
    assert any(rows[0][k] != rows[1][k] for k in weight_columns)  # the schedule moved them
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert set(weight_columns) <= set(events.Tags()["scalars"])


def test_final_validation_has_every_metric_per_class(tmp_path):
    train_in_process(ONE_EPOCH, tmp_path)
    row = _rows(tmp_path)[-1]
    for name in ("dice", "iou", "precision", "recall", "hd95", "nsd"):
        assert {f"{name}_1", f"{name}_2", f"{name}_3", f"mean_{name}"} <= row.keys()
    with open(tmp_path / "validation_cases.csv") as f:
        cases = list(csv.DictReader(f))
    assert len(cases) == 1 and cases[0]["case"]  # data.max_val_cases=1
    assert float(cases[0]["dice_1"]) == pytest.approx(float(row["dice_1"]))


def test_mirrored_validation_flips_only_the_axes_training_flips(tmp_path):
    """Flips along H and W only (a D flip would swap hippocampus head and body): validation
    averages those 4 flips, and its Dice is that of a prediction mirrored the same way."""
    from hybrid_unet.engine.validation import predict_case
    from hybrid_unet.inference.predictor import Predictor
    from hybrid_unet.metrics import case_metrics

    aug = ("+data.augmentation={_target_: hybrid_unet.data.transforms.build_train_transform, "
           "p_flip: 0.5, flip_axes: [1, 2]}")  # fmt: skip
    _, trainer = train_in_process([*ONE_EPOCH, "trainer.val_mirror=true", aug], tmp_path)
    assert trainer.val_mirror_axes == (1, 2)
    case = trainer.data.source.load(trainer.data.val_names[0])
    model, precision = trainer.model.eval(), trainer.t["precision"]
    probs = {
        axes: predict_case(model, case.image, 4, (32, 32, 32), torch.device("cpu"), precision,
                           mirror_axes=axes)
        for axes in [(1, 2), (0, 1, 2)]
    }  # fmt: skip
    dice = case_metrics(probs[(1, 2)].argmax(0), case.label, 4, case.spacing, ("dice",))["dice_1"]
    with open(tmp_path / "validation_cases.csv") as f:
        logged = float(next(csv.DictReader(f))["dice_1"])
    assert logged == pytest.approx(dice, abs=1e-6)
    assert np.abs(probs[(1, 2)] - probs[(0, 1, 2)]).max() > 1e-4  # the axes make a difference
    # predict's default (mirror_axes=auto) predicts the run as its validation did.
    predictor = Predictor(tmp_path, "cpu", precision)
    assert predictor.sliding_window.mirror_axes == [1, 2]
    np.testing.assert_allclose(predictor.probabilities(case.image), probs[(1, 2)], atol=1e-5)


def test_time_budget_sizes_the_run_and_decays_lr_to_zero(tmp_path, monkeypatch):
    clock = iter(range(0, 10**6))  # a fake clock: every reading is one second later
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(next(clock)))
    overrides = ["trainer.max_epochs=50", "trainer.steps_per_epoch=10", "trainer.val_every=100",
                 "trainer.max_time_minutes=1.5", "data.max_val_cases=1", *SMALL_STEPS]  # fmt: skip
    summary, trainer = train_in_process(overrides, tmp_path)
    planned = trainer.state.planned_steps
    assert 20 < planned < 500
    assert summary["steps"] == planned
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def _steps_take(monkeypatch, seconds) -> dict:
    """A fake clock that advances ``seconds(n)`` during training step ``n`` (from 1) only;
    returns it (``now["t"]``) for other fakes to advance."""
    now = {"t": 0.0, "steps": 0}
    real_step = trainer_module.train_step

    def timed_step(*args, **kwargs):
        now["steps"] += 1
        now["t"] += seconds(now["steps"])
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", timed_step)
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: now["t"])
    return now


def test_time_budget_refits_when_the_first_steps_were_slow(tmp_path, monkeypatch):
    """Steps 1-25 take 2 s (a busy machine), later ones 1 s. A one-shot plan from steps 6-25
    would stop at step 85 (50 s + 60 x 2 s = 170 s of a 180 s budget with a 10 s reserve, but
    in fact 110 s); re-fitting every 25 steps uses the budget and still ends with LR 0."""
    _steps_take(monkeypatch, lambda n: 2.0 if n <= 25 else 1.0)
    overrides = ["trainer.max_epochs=100", "trainer.steps_per_epoch=10", "trainer.val_every=1000",
                 "trainer.max_time_minutes=3", "data.max_val_cases=1", *SMALL_STEPS]  # fmt: skip
    summary, trainer = train_in_process(overrides, tmp_path)
    assert summary["steps"] == trainer.state.planned_steps
    assert 130 <= summary["steps"] <= 160  # one-shot: 85
    assert trainer.state.elapsed_seconds <= 180.0
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def _validation_takes(monkeypatch, now: dict, seconds_per_case: float) -> None:
    real_validate = trainer_module.validate

    def slow_validate(model, cases, *args, **kwargs):
        now["t"] += seconds_per_case * len(cases)
        return real_validate(model, cases, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "validate", slow_validate)


def test_time_budget_keeps_the_time_the_final_validation_takes(tmp_path, monkeypatch):
    """Validating a case takes 8 s here (a large network, large scans or mirroring). The run
    times one validation case before training and keeps 1.1x the scaled time for the
    end, so training and the final validation end inside the budget; the fixed 10 s reserve
    it replaces trained to 168 s and ended at 184 s of a 180 s budget."""
    _validation_takes(monkeypatch, _steps_take(monkeypatch, lambda n: 4.0), 8.0)
    overrides = ["trainer.max_epochs=100", "trainer.steps_per_epoch=10", "trainer.val_every=1000",
                 "trainer.max_time_minutes=3", "data.max_val_cases=2", *SMALL_STEPS]  # fmt: skip
    summary, trainer = train_in_process(overrides, tmp_path)
    assert trainer.final_val_seconds == pytest.approx(16.0)  # one case timed, two to validate
    assert summary["steps"] == trainer.state.planned_steps == 38  # 25 + (180 - 108 - 17.6) / 4
    assert 170.0 <= trainer.state.elapsed_seconds <= 180.0  # 8 (timing) + 38 x 4 + 16 = 176
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_budget_shorter_than_the_warm_up_still_decays_to_zero(tmp_path, monkeypatch):
    """38 planned steps against a 100-step warm-up (the 30-minute recipe's, on a short budget):
    the run ended at 39 % of the peak LR, still warming up."""
    _validation_takes(monkeypatch, _steps_take(monkeypatch, lambda n: 4.0), 8.0)
    overrides = ["trainer.max_epochs=100", "trainer.steps_per_epoch=10", "trainer.val_every=1000",
                 "trainer.max_time_minutes=3", "data.max_val_cases=2", "scheduler.warmup_steps=100",
                 "optimizer.lr=0.01", *SMALL_STEPS]  # fmt: skip
    summary, trainer = train_in_process(overrides, tmp_path)
    assert summary["steps"] == trainer.state.planned_steps == 38
    assert trainer.scheduler.lr_lambdas[0].warmup_steps == 19  # half the plan
    assert float(_rows(tmp_path)[-1]["lr"]) == pytest.approx(0.0, abs=1e-12)


def test_a_validation_longer_than_the_budget_still_follows_one_step(tmp_path, monkeypatch):
    _validation_takes(monkeypatch, _steps_take(monkeypatch, lambda n: 1.0), 8.0)
    overrides = ["trainer.max_epochs=2", "trainer.steps_per_epoch=10", "trainer.val_every=1000",
                 "trainer.max_time_minutes=0.2", "data.max_val_cases=2", *SMALL_STEPS]  # fmt: skip
    summary, _ = train_in_process(overrides, tmp_path)  # 12 s: 8 s timing, 16 s to validate
    assert summary["steps"] == 1 and summary["complete"]
    assert summary["best_mean_dice"] is not None


def test_a_budget_spent_before_the_first_plan_stops_at_the_budget(tmp_path, monkeypatch):
    """The run is first sized after 25 steps; with 8 s steps and a 30 s budget it used to run on
    to that first plan (26 steps, 208 s; measured: segresnet at 0.3 min ran 221 s)."""
    _steps_take(monkeypatch, lambda n: 8.0)
    overrides = ["trainer.max_epochs=3", "trainer.steps_per_epoch=50", "trainer.val_every=1",
                 "trainer.max_time_minutes=0.5", "data.max_val_cases=1"]  # fmt: skip
    summary, _ = train_in_process(overrides, tmp_path)
    assert summary["steps"] == 4 and summary["epochs"] == 1  # 32 s: the step that crossed 30 s
    assert summary["complete"] and summary["best_mean_dice"] is not None  # validated, finished


@pytest.mark.parametrize("extra", [[], ["model.drop_path=0.2"]], ids=["deterministic", "drop_path"])
def test_sigterm_saves_mid_epoch_and_resume_finishes_identically(tmp_path, monkeypatch, extra):
    """Also with stochastic layers (drop-path draws from torch's RNG every step): the resumed
    run draws the same numbers as the straight one."""
    train_in_process(["trainer.max_epochs=2", "run_name=a", *extra], tmp_path / "a")
    sigterm_after_step(monkeypatch, 4)  # mid-way through epoch 2 (3 steps per epoch)
    stopped, _ = train_in_process(["trainer.max_epochs=2", *extra], tmp_path / "b")
    assert stopped["steps"] == 4
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["state"]["step"] == 4
    monkeypatch.undo()
    resumed, _ = train_in_process(
        ["trainer.max_epochs=2", f"trainer.resume={tmp_path / 'b'}", *extra], tmp_path / "b"
    )
    assert resumed["steps"] == 6
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    for key in ("step", "train_loss", "lr", "mean_dice"):  # elapsed_s differs, nothing else
        assert [r[key] for r in _rows(tmp_path / "a")] == [r[key] for r in _rows(tmp_path / "b")]


def test_a_loss_schedule_spans_the_epochs_a_time_budget_plans():
    """``loss=adaptive_schedule`` moves its weights over the planned run: under a time budget
    that is the fitted step count, not ``trainer.max_epochs`` (which a budget never reaches)."""
    from types import SimpleNamespace

    from hybrid_unet.engine.trainer import Trainer

    run = SimpleNamespace(t={"max_time_minutes": 6.5, "steps_per_epoch": 250, "max_epochs": 1000},
                          state=SimpleNamespace(planned_steps=1985))  # fmt: skip
    assert Trainer.planned_epochs(run) == 8
    run.state.planned_steps = 0  # before the budget is fitted to the measured speed
    assert Trainer.planned_epochs(run) == 1000
    run.t["max_time_minutes"], run.state.planned_steps = None, 1985
    assert Trainer.planned_epochs(run) == 1000


def test_train_loss_is_the_mean_of_the_finite_steps(tmp_path, monkeypatch, capsys):
    """A skipped (non-finite) step adds nothing to the epoch's loss, nor to its count."""
    real_step, results = trainer_module.train_step, []

    def every_other_nan(model, loss_fn, optimizer, scaler, batches, *args):
        if len(results) % 2:
            batches = [{**b, "image": torch.full_like(b["image"], float("nan"))} for b in batches]
        results.append(real_step(model, loss_fn, optimizer, scaler, batches, *args))
        return results[-1]

    monkeypatch.setattr(trainer_module, "train_step", every_other_nan)
    summary, _ = train_in_process(["trainer.max_epochs=1", "trainer.steps_per_epoch=4",
                                   "data.max_val_cases=1"], tmp_path)  # fmt: skip
    finite = [r.loss for r in results if not r.skipped]
    assert summary["skipped_steps"] == 2 and len(finite) == 2
    assert float(_rows(tmp_path)[0]["train_loss"]) == pytest.approx(np.mean(finite), rel=1e-5)
    assert "(2 step(s) skipped: non-finite loss or gradient)" in capsys.readouterr().out
