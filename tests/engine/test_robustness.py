"""Early stopping, gradient accumulation and the weight EMA (the non-finite-step guard is in
tests/reliability/test_faults.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from hybrid_unet.engine import trainer as trainer_module
from hybrid_unet.engine.checkpoint import load_checkpoint
from hybrid_unet.engine.ema import ModelEMA
from hybrid_unet.engine.state import TrainState
from hybrid_unet.engine.step import train_step
from hybrid_unet.engine.trainer import Trainer
from tests.helpers import sigterm_after_step, train_in_process

SHORT = ["trainer.steps_per_epoch=2", "data.max_val_cases=1"]


def test_early_stopping_stops_after_patience_and_saves_its_state(tmp_path, capsys):
    # min_delta larger than any Dice change: only the first validation counts as progress.
    summary, _ = train_in_process([*SHORT, "trainer.max_epochs=6",
                                   "trainer.early_stopping.patience=2",
                                   "trainer.early_stopping.min_delta=10"], tmp_path)  # fmt: skip
    assert summary["epochs"] == 3 and "early stopping at epoch 3" in summary["stop_reason"]
    assert "Stopped early: mean_dice did not improve" in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["state"]
    assert state["stale_validations"] == 2 and state["early_stop_best"] is not None


def test_accumulated_batches_step_like_one_big_batch():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3), torch.randn(4, 1)
    models = [torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    mse = torch.nn.MSELoss()
    whole = train_step(models[0], mse, opts[0], scaler, [{"image": x, "label": y}], "fp32", None)
    halves = [{"image": x[:2], "label": y[:2]}, {"image": x[2:], "label": y[2:]}]
    split = train_step(models[1], mse, opts[1], scaler, halves, "fp32", None)
    assert split.loss == pytest.approx(whole.loss, rel=1e-6)
    torch.testing.assert_close(models[1].weight, models[0].weight)


def test_accumulation_in_the_trainer_consumes_k_batches_per_step(tmp_path, monkeypatch):
    seen = []
    real_step = trainer_module.train_step

    def counting(model, loss_fn, optimizer, scaler, batches, *args):
        seen.append(len(batches))
        return real_step(model, loss_fn, optimizer, scaler, batches, *args)

    monkeypatch.setattr(trainer_module, "train_step", counting)
    summary, _ = train_in_process(
        [*SHORT, "trainer.max_epochs=1", "trainer.accumulate_grad_batches=2"], tmp_path
    )
    assert summary["steps"] == 2 and seen == [2, 2]


def test_ema_update_and_swap():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(step=100)  # past the warm-up: 0.5 * 0 + 0.5 * 1
    with ema.swapped():
        assert torch.equal(model.weight, torch.full((1, 2), 0.5))
    assert torch.equal(model.weight, torch.ones(1, 2))
    # The warm-up: at step 0 the average takes 0.9 of the new weights, not 1 - decay of them,
    # so a 0.999 average is not held near the random initial weights for thousands of steps.
    slow = ModelEMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(11.0)
    slow.update(step=0)  # 0.1 * 1 + 0.9 * 11
    torch.testing.assert_close(slow.shadow["weight"], torch.full((1, 2), 10.0))
    assert slow.decay_at(0) == pytest.approx(0.1) and slow.decay_at(10**6) == 0.999
    with pytest.raises(ValueError, match="ema_decay"):
        ModelEMA(model, decay=1.0)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_trainer_averages_after_every_step_and_validates_with_the_average(
    tmp_path, monkeypatch
):
    """The saved EMA is the warm-up average of the weights after each step, and validation
    (hence best.pt and the logged Dice) sees that average, not the raw weights."""
    after_steps, validated = [], []
    real_step, real_validate = trainer_module.train_step, trainer_module.validate

    def recording_step(model, *args):
        if not after_steps:
            after_steps.append(_weights(model))  # the initial weights
        result = real_step(model, *args)
        after_steps.append(_weights(model))
        return result

    def recording_validate(model, *args, **kwargs):
        validated.append(_weights(model))
        return real_validate(model, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", recording_step)
    monkeypatch.setattr(trainer_module, "validate", recording_validate)
    _, trainer = train_in_process([*SHORT, "trainer.max_epochs=1", "trainer.ema_decay=0.5"],
                                  tmp_path)  # fmt: skip
    expected = dict(after_steps[0])
    for step, weights in enumerate(after_steps[1:]):
        decay = min(0.5, (1 + step) / (10 + step))
        expected = {k: decay * expected[k] + (1 - decay) * v if v.is_floating_point() else v
                    for k, v in weights.items()}  # fmt: skip
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for name, value in expected.items():
        torch.testing.assert_close(saved["ema"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(validated[-1][name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(saved["ema"][k], saved["model"][k]) for k in expected)
    for name, value in _weights(trainer.model).items():  # its own weights back after validation
        torch.testing.assert_close(value, after_steps[-1][name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_ema_is_saved_and_a_resumed_run_matches(tmp_path, monkeypatch):
    ema = ["trainer.ema_decay=0.9", "trainer.max_epochs=2", "data.max_val_cases=1"]
    train_in_process(ema, tmp_path / "a")
    sigterm_after_step(monkeypatch, 4)
    train_in_process(ema, tmp_path / "b")
    monkeypatch.undo()
    train_in_process([*ema, f"trainer.resume={tmp_path / 'b'}"], tmp_path / "b")
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["ema"] is not None
    assert any(not torch.equal(a["ema"][k], a["model"][k]) for k in a["model"])
    for name in a["ema"]:
        torch.testing.assert_close(a["ema"][name], b["ema"][name], rtol=1e-5, atol=1e-6)


def _early_stopping_over(values: list[float], patience: int = 2) -> TrainState:
    trainer = SimpleNamespace(state=TrainState(), early_stopping={
        "monitor": "mean_precision", "mode": "max", "min_delta": 0.0, "patience": patience})  # fmt: skip
    for epoch, value in enumerate(values):
        trainer.state.epoch = epoch
        Trainer.check_early_stopping(trainer, {"mean_precision": value})
    return trainer.state


def test_a_nan_validation_never_becomes_the_value_early_stopping_must_beat():
    # Precision is NaN while an untrained network predicts no foreground.
    state = _early_stopping_over([math.nan, 0.2, 0.5, 0.8])
    assert state.early_stop_best == 0.8 and state.stale_validations == 0
    assert state.stop_reason == ""
    state = _early_stopping_over([0.5, math.nan, 0.6])
    assert state.early_stop_best == 0.6 and state.stop_reason == ""


def test_a_monitor_that_stays_nan_stops_after_the_patience():
    state = _early_stopping_over([math.nan, math.nan])
    assert state.early_stop_best is None
    assert state.stop_reason.startswith("mean_precision was never finite for 2 validations")
