"""The training loop: build, (resume), then epochs of steps, validation and checkpoints."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hybrid_unet.engine import build
from hybrid_unet.engine.checkpoint import (
    atomic_save,
    checkpoint_metadata,
    load_checkpoint,
    rng_state,
    set_rng_state,
    unwrap_model,
)  # fmt: skip
from hybrid_unet.engine.signals import StopRequest
from hybrid_unet.engine.state import TrainState
from hybrid_unet.engine.step import train_step
from hybrid_unet.engine.validation import validate
from hybrid_unet.logging.base import build_loggers

_CALIBRATION_STEPS = 20  # steps timed before a time budget sizes the run


class Trainer:
    """Trains one run described by a resolved config (a plain dict) in ``run_dir``."""

    def __init__(self, cfg: dict[str, Any], run_dir: str | Path) -> None:
        self.cfg = cfg
        self.t = cfg["trainer"]
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = build.resolve_device(self.t["device"])
        if self.t["num_threads"]:
            torch.set_num_threads(self.t["num_threads"])
        torch.use_deterministic_algorithms(self.t["deterministic"], warn_only=True)
        torch.manual_seed(cfg["seed"])

        self.data = build.build_data(cfg, self.run_dir)  # may fill planned values into cfg
        self.model = build.build_model(cfg).to(self.device)
        self.loss_fn = build.build_loss(cfg).to(self.device)
        self.optimizer = build.build_optimizer(cfg, self.model, self.loss_fn)
        self.scheduler = build.build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.t["precision"] == "fp16")
        self.state = TrainState()
        self.net = torch.compile(self.model) if self.t["compile"] else self.model
        resume_from = resolve_resume(self.t["resume"], self.run_dir)
        logger_states = self.load(resume_from) if resume_from else None
        self.logger = build_loggers(
            cfg["logger"], self.run_dir, self.state.step if resume_from else None, logger_states
        )

    def fit(self) -> dict[str, Any]:
        """Train to ``max_epochs`` (or the time budget, or a stop signal); returns the summary."""
        t, state = self.t, self.state
        batches = iter(build.build_train_loader(self.cfg, self.data, state.step))
        val_cases = [self.data.source.load(n) for n in self.data.val_names]
        stop = StopRequest().install()
        self.started = time.perf_counter() - state.elapsed_seconds  # the clock survives resumes
        try:
            while not self.finished() and not stop.requested:
                self.loss_fn.update(state.epoch, t["max_epochs"])
                self.model.train()
                todo = t["steps_per_epoch"] - state.epoch_steps
                bar = tqdm(range(todo), desc=f"epoch {state.epoch + 1}/{t['max_epochs']}",
                           disable=not t["progress"], leave=False, file=sys.stdout)  # fmt: skip
                for _ in bar:
                    batch = {
                        k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()
                    }
                    result = train_step(self.net, self.loss_fn, self.optimizer, self.scaler, batch,
                                        t["precision"], t["grad_clip"])  # fmt: skip
                    self.scheduler.step()
                    state.step += 1
                    state.epoch_steps += 1
                    state.skipped_steps += result.skipped
                    state.epoch_loss_sum += 0.0 if result.skipped else result.loss
                    state.elapsed_seconds = time.perf_counter() - self.started
                    bar.set_postfix(loss=f"{result.loss:.4f}")
                    if state.step == _CALIBRATION_STEPS:
                        self.fit_schedule_to_time_budget()
                    if stop.requested or state.step >= self.total_steps():
                        break
                if stop.requested and state.epoch_steps < t["steps_per_epoch"]:
                    self.save("last.pt")  # mid-epoch: resume continues this epoch
                    break
                self.end_epoch(val_cases, result.grad_norm)
        finally:
            stop.uninstall()
            self.logger.close()
        if stop.requested:
            print(f"Stopped by {stop.requested}; resume with trainer.resume={self.run_dir}")
        return self.summary()

    def end_epoch(self, val_cases: list, grad_norm: float) -> None:
        """Log the epoch, validate when due, write ``last`` (and ``best``)."""
        t, state = self.t, self.state
        metrics = {
            "epoch": state.epoch + 1,
            "train_loss": state.epoch_loss_sum / max(state.epoch_steps, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "elapsed_s": state.elapsed_seconds,
            **{f"loss/{k}": v for k, v in self.loss_fn.log_values().items()},
        }
        state.epoch += 1
        state.epoch_loss_sum, state.epoch_steps = 0.0, 0
        last = self.finished()
        if state.epoch % t["val_every"] == 0 or last:
            metrics.update(
                self.validate(val_cases, t["final_val_metrics" if last else "val_metrics"])
            )
            state.elapsed_seconds = metrics["elapsed_s"] = time.perf_counter() - self.started
            if metrics["mean_dice"] > state.best_metric:
                state.best_metric, state.best_epoch = metrics["mean_dice"], state.epoch
                self.save("best.pt")
        self.logger.log_scalars(metrics, state.step)
        self.save("last.pt")
        shown = {k: round(v, 4) for k, v in metrics.items() if k in ("train_loss", "mean_dice")}
        print(
            f"epoch {state.epoch}/{t['max_epochs']} "
            + " ".join(f"{k}={v}" for k, v in shown.items())
        )

    def validate(self, val_cases: list, names: list[str]) -> dict[str, float]:
        d = self.cfg["data"]
        return validate(
            self.model, val_cases, d["num_classes"], tuple(d["patch_size"]), self.device,
            self.t["precision"] if self.t["precision"] != "fp16" else "fp32",
            self.t["val_overlap"], self.t["val_sw_batch_size"], tuple(names),
            self.t["val_tolerance_mm"],
        )  # fmt: skip

    def total_steps(self) -> int:
        """Steps this run will take: the whole run, or what fits the time budget."""
        return self.state.planned_steps or self.t["max_epochs"] * self.t["steps_per_epoch"]

    def finished(self) -> bool:
        return (
            self.state.epoch >= self.t["max_epochs"]
            or self.state.step >= self.total_steps()
            or self.out_of_time()
        )

    def fit_schedule_to_time_budget(self) -> None:
        """With ``trainer.max_time_minutes``, size the run and its LR decay to the measured speed.

        Called once, after ``_CALIBRATION_STEPS`` steps: the step count that fits the remaining
        budget (keeping a reserve for validation and saving) becomes the schedule's horizon, so
        the learning rate reaches zero as the time runs out instead of being cut off half-way.
        The count is stored in the run state, so a resumed run keeps the same schedule.
        """
        budget = self.t["max_time_minutes"]
        node = self.cfg["scheduler"]
        if budget is None or self.state.planned_steps or node.get("total_steps") is not None:
            return
        seconds_per_step = self.state.elapsed_seconds / self.state.step
        reserve = max(10.0, 0.05 * 60.0 * budget)
        remaining = 60.0 * budget - self.state.elapsed_seconds - reserve
        planned = self.state.step + max(int(remaining / seconds_per_step), 1)
        planned = min(planned, self.t["max_epochs"] * self.t["steps_per_epoch"])
        self.state.planned_steps = planned
        for fn in getattr(self.scheduler, "lr_lambdas", []):
            if hasattr(fn, "total_steps"):
                fn.total_steps = planned
        print(f"Time budget {budget} min at {seconds_per_step:.2f} s/step: {planned} steps.")

    def out_of_time(self) -> bool:
        budget = self.t["max_time_minutes"]
        return budget is not None and self.state.elapsed_seconds >= 60.0 * budget

    def save(self, name: str) -> Path:
        """Write a full checkpoint atomically to ``checkpoints/<name>``."""
        return atomic_save(
            {
                "model": unwrap_model(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "loss": self.loss_fn.state_dict(),
                "state": self.state.state_dict(),
                "rng": rng_state(),
                "logger": self.logger.state_dict() if hasattr(self, "logger") else {},
                "config": self.cfg,
                "plan": self.data.plan,  # how inference must preprocess a new scan
                "meta": checkpoint_metadata(),
            },
            self.ckpt_dir / name,
        )

    def load(self, path: Path) -> dict:
        """Restore everything :meth:`save` wrote; returns the loggers' saved states."""
        ckpt = load_checkpoint(path)
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.loss_fn.load_state_dict(ckpt["loss"])
        self.state.load_state_dict(ckpt["state"])
        set_rng_state(ckpt["rng"])
        print(f"Resumed from {path} at epoch {self.state.epoch}, step {self.state.step}.")
        return ckpt.get("logger", {})

    def summary(self) -> dict[str, Any]:
        """Best result and where the run lives; also written to ``summary.json``."""
        s = self.state
        summary = {
            "best_mean_dice": None if math.isinf(s.best_metric) else s.best_metric,
            "best_epoch": s.best_epoch,
            "epochs": s.epoch,
            "steps": s.step,
            "skipped_steps": s.skipped_steps,
            "train_seconds": round(s.elapsed_seconds, 1),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "run_dir": str(self.run_dir),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: a file, a run dir (its ``last.pt``), or ``auto``."""
    if not resume:
        return None
    path = run_dir if resume == "auto" else Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
        if not path.exists() and resume == "auto":
            return None
    if not path.is_file():
        raise FileNotFoundError(f"trainer.resume: no checkpoint at {path}")
    return path
