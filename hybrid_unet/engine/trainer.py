"""The training loop: build, (resume), then epochs of steps, validation and checkpoints."""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hybrid_unet.atomic import atomic_write_json, remove_stale_temporaries
from hybrid_unet.data.transforms import validated_mirror_axes
from hybrid_unet.engine import build
from hybrid_unet.engine.checkpoint import (
    CheckpointWriteError,
    checkpoint_metadata,
    rng_state,
    set_rng_state,
    unwrap_model,
)  # fmt: skip
from hybrid_unet.engine.distributed import (
    any_rank,
    gather_lists,
    init_distributed,
    mean_over_ranks,
    weights_digest,
)  # fmt: skip
from hybrid_unet.engine.ema import ModelEMA
from hybrid_unet.engine.manager import (
    CheckpointManager,
    find_resumable,
    improves,
    load_training_checkpoint,
)
from hybrid_unet.engine.resources import model_cost, peak_memory_mb
from hybrid_unet.engine.resume import check_resume_config
from hybrid_unet.engine.signals import StopRequest
from hybrid_unet.engine.state import TrainState
from hybrid_unet.engine.step import TrainingDiverged, autocast_state_kept, train_step
from hybrid_unet.engine.validation import predict_case, validate, write_case_table
from hybrid_unet.inference.sliding_window import window_count
from hybrid_unet.logging.base import build_loggers
from hybrid_unet.logging.panels import slice_panel

_VAL_MARGIN = 1.1  # a time budget keeps this times the timed final validation for the end
_CALIBRATION_STEPS = 25  # a time budget re-fits the run to the measured speed every 25 steps
_WARMUP_STEPS = 5  # the first steps (loading cases, allocator warm-up) are left out of the speed


class LoaderWorkerDied(RuntimeError):
    """A data loader worker process died (killed, out of memory); says how to resume."""


def _mean_loss(state: TrainState) -> float:
    """The epoch's mean training loss over its finite steps (NaN when every step was skipped)."""
    finite = state.epoch_steps - state.epoch_skipped
    return state.epoch_loss_sum / finite if finite > 0 else float("nan")


class Trainer:
    """Trains one run described by a resolved config (a plain dict) in ``run_dir``."""

    def __init__(
        self, cfg: dict[str, Any], run_dir: str | Path, resume_from: tuple[Path, dict] | None = None
    ) -> None:
        """``resume_from``: the checkpoint ``trainer.resume`` names, when the caller read it
        already (path and contents)."""
        self.cfg = cfg
        self.t = cfg["trainer"]
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = build.resolve_device(self.t["device"])
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled:
            if self.t["max_time_minutes"] is not None:
                raise ValueError("trainer.max_time_minutes is not supported under torchrun yet")
            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.dist.local_rank)
                torch.cuda.set_device(self.device)
        if self.t["num_threads"]:
            torch.set_num_threads(self.t["num_threads"])
        set_deterministic(self.t["deterministic"])
        torch.manual_seed(cfg["seed"])
        if self.t["accumulate_grad_batches"] < 1 or self.t["max_bad_steps"] < 1:
            raise ValueError(
                "trainer.accumulate_grad_batches and trainer.max_bad_steps must be >= 1"
            )

        self.data = build.build_data(cfg, self.run_dir)  # may fill planned values into cfg
        resume_from = resume_from or resolve_resume(self.t["resume"], self.run_dir)
        # A resume loads its own weights: trainer.pretrained's file need not exist any more.
        self.model = build.build_model(cfg, pretrained=not resume_from).to(self.device)
        self.loss_fn = build.build_loss(cfg).to(self.device)
        self.optimizer = build.build_optimizer(cfg, self.model, self.loss_fn)
        self.scheduler = build.build_scheduler(cfg, self.optimizer)
        self.plateau = build.steps_per_validation(self.scheduler)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.t["precision"] == "fp16")
        self.ema = ModelEMA(self.model, self.t["ema_decay"]) if self.t["ema_decay"] else None
        self.ckpts = CheckpointManager(self.ckpt_dir, **self.t["checkpoint"])
        if self.dist.is_main:  # writes (checkpoint, metrics.csv, summary) cut short by a kill
            for folder in (self.run_dir, self.ckpt_dir):
                remove_stale_temporaries(folder)
        self.early_stopping = self.t["early_stopping"]
        self.val_mirror_axes = validated_mirror_axes(cfg)  # the axes training flips, if any
        frozen = self.t["freeze_encoder_epochs"]
        self.encoder = build.encoder_parameters(self.model) if frozen else []
        self.state = TrainState(best_metric=self.ckpts.worst())
        self.net = torch.compile(self.model) if self.t["compile"] else self.model
        if self.dist.enabled:  # compile first, then wrap (DDP's hooks see compiled graphs)
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Unused parameters: deep-supervision heads whose outputs the loss drops.
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=ids, find_unused_parameters=True
            )
        self.stopping = False  # a stop signal reached (on any rank)
        self.final_val_seconds = 0.0  # timed at the start of a run on a time budget
        self.stopped_by: str | None = None  # the signal, on the rank that received it
        logger_states = self.load(*resume_from) if resume_from else None
        resume_step = self.state.step if resume_from else None
        if self.t["resume"] == "auto" and not resume_from and self.ckpt_dir.is_dir():
            # An attempt killed before its first checkpoint: start over, and let the loggers
            # drop what it logged (resuming at step 0), so no step appears twice.
            print(f"trainer.resume=auto: no readable checkpoint in {self.ckpt_dir}; starting "
                  "from step 0")  # fmt: skip
            resume_step = 0
        loggers = cfg["logger"] if self.dist.is_main else {}  # only rank 0 logs
        self.logger = build_loggers(loggers, self.run_dir, resume_step, logger_states, cfg)

    def fit(self) -> dict[str, Any]:
        """Train to ``max_epochs`` (or the time budget, early stop or a stop signal)."""
        t, state = self.t, self.state
        start_batch = state.step * t["accumulate_grad_batches"]
        rank, world = self.dist.rank, self.dist.world_size
        # The loader's iterator draws a base seed from torch's RNG: kept out of the RNG state
        # (restored on resume) that stochastic layers draw from, so a resume draws as a
        # straight run does.
        with torch.random.fork_rng(devices=[]):
            batches = iter(build.build_train_loader(self.cfg, self.data, start_batch, rank, world))
        val_cases = [self.data.source.load(n) for n in self.data.val_names[rank::world]]
        if self.dist.is_main:
            print(f"Training in {self.run_dir} on {self.device.type}: a line per epoch follows.")
        # Installed until the summary is written: a SIGTERM at any point of fit ends cleanly.
        with StopRequest() as stop, autocast_state_kept(self.device.type):
            self.started = time.perf_counter() - state.elapsed_seconds  # the clock survives resumes
            if t["max_time_minutes"] is not None:  # the budget keeps this much for the end
                self.final_val_seconds = self.time_final_validation(val_cases)
            try:
                while not self.finished() and not self.stopping:
                    self.loss_fn.update(state.epoch, self.planned_epochs())
                    self.model.train()
                    for p in self.encoder:  # a function of the epoch, so resumes agree
                        p.requires_grad_(state.epoch >= t["freeze_encoder_epochs"])
                    grad_norm = self.train_epoch(batches, stop)
                    if self.stopping and state.epoch_steps < t["steps_per_epoch"]:
                        self.save_mid_epoch()  # resume continues here
                        break
                    self.end_epoch(val_cases, grad_norm)
            except CheckpointWriteError as exc:
                raise CheckpointWriteError(
                    exc.path,
                    f"{exc.problem}; free space, then resume with trainer.resume={self.run_dir}",
                ) from exc
            except RuntimeError as exc:
                if "DataLoader worker" not in str(exc):
                    raise
                # The data order depends only on (seed, step): resuming replays the same batches.
                first = str(exc).strip().splitlines()[0]
                # The iterator lives on in this exception's traceback: end its other workers now.
                getattr(batches, "_shutdown_workers", lambda: None)()
                raise LoaderWorkerDied(
                    f"a data loader worker died at step {state.step} ({first}); the checkpoints "
                    f"in {self.ckpt_dir} are intact: resume with trainer.resume={self.run_dir} "
                    "(lower data.num_workers if workers are killed for memory)"
                ) from exc
            finally:
                self.logger.close()
            # "SIGTERM" / "SIGINT" / "SIGUSR2", None on other ranks
            self.stopped_by = stop.requested
            if self.stopping and self.dist.is_main:
                print(f"Stopped by {stop.requested or 'a signal to another rank'} at step {state.step} (saved "
                      f"{self.ckpt_dir / 'last.pt'}); resume with trainer.resume={self.run_dir}")  # fmt: skip
            elif state.stop_reason:
                print(f"Stopped early: {state.stop_reason}")
            return self.summary()

    def train_epoch(self, batches, stop: StopRequest) -> float:
        """The rest of this epoch's steps (stopping early on a signal); returns the grad norm."""
        t, state = self.t, self.state
        todo = t["steps_per_epoch"] - state.epoch_steps
        bar = tqdm(
            range(todo),
            desc=f"epoch {state.epoch + 1}/{t['max_epochs']}",
            disable=not t["progress"] or not sys.stdout.isatty(),
            leave=False,
            file=sys.stdout,
        )  # a bar only on a terminal: in a log it is 50 KB of frames
        grad_norm = float("nan")
        for _ in bar:
            micro = [
                {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
                for _ in range(t["accumulate_grad_batches"])
            ]
            result = train_step(self.net, self.loss_fn, self.optimizer, self.scaler, micro,
                                t["precision"], t["grad_clip"])  # fmt: skip
            if self.plateau:
                self.scheduler.warmup_step()  # and .step(metric) after each validation
            else:
                self.scheduler.step()
            if self.ema is not None and not (result.skipped or result.overflow):
                self.ema.update(state.step)
            state.step += 1
            state.epoch_steps += 1
            state.skipped_steps += result.skipped
            state.epoch_skipped += result.skipped
            state.bad_steps_in_row = state.bad_steps_in_row + 1 if result.skipped else 0
            state.epoch_loss_sum += 0.0 if result.skipped else result.loss
            state.elapsed_seconds = time.perf_counter() - self.started
            grad_norm = result.grad_norm
            bar.set_postfix(loss=f"{result.loss:.4f}")
            if state.bad_steps_in_row >= t["max_bad_steps"]:
                raise TrainingDiverged(
                    f"training diverged: {state.bad_steps_in_row} consecutive steps with a "
                    f"non-finite loss or gradient norm (up to step {state.step}); lower "
                    "optimizer.lr, set trainer.grad_clip or use trainer.precision=fp32"
                )
            if state.step == _WARMUP_STEPS:
                self.warm_elapsed = state.elapsed_seconds
            if state.step % _CALIBRATION_STEPS == 0:
                self.fit_schedule_to_time_budget()
            self.stopping = any_rank(stop.requested is not None, self.dist)
            # out_of_time: a budget spent before the first plan (25 steps) or a machine that
            # slowed down ends the epoch here, not after all its steps.
            if self.stopping or state.step >= self.total_steps() or self.out_of_time():
                break
        return grad_norm

    def close(self) -> None:
        """Leave the process group (torchrun)."""
        if self.dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def end_epoch(self, val_cases: list, grad_norm: float) -> None:
        """Log the epoch, validate when due, write ``last`` (and best, top-k, every N)."""
        t, state = self.t, self.state
        metrics = {
            "epoch": state.epoch + 1,
            "train_loss": mean_over_ranks(_mean_loss(state), self.dist),
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "elapsed_s": state.elapsed_seconds,
            "system/peak_memory_mb": peak_memory_mb(self.device),
            **{f"loss/{k}": v for k, v in self.loss_fn.log_values().items()},
        }
        skipped = state.epoch_skipped
        state.epoch += 1
        state.epoch_loss_sum, state.epoch_steps, state.epoch_skipped = 0.0, 0, 0
        last, images = self.finished(), {}
        if state.epoch % t["val_every"] == 0 or last:
            with self.ema.swapped() if self.ema is not None else nullcontext():
                summary, rows = self.validate(
                    val_cases, t["final_val_metrics" if last else "val_metrics"]
                )
                metrics.update(summary)
                images = self.panels(val_cases[:1]) if t["log_images"] and self.dist.is_main else {}
            if last and self.dist.is_main:  # per-case results, for cross-validation summaries
                write_case_table(self.run_dir / "validation_cases.csv", rows)
            state.elapsed_seconds = metrics["elapsed_s"] = time.perf_counter() - self.started
            state.best_mean_dice = max(state.best_mean_dice, metrics["mean_dice"])
            self.check_early_stopping(metrics)
            if self.plateau:
                self.scheduler.step(self.ckpts.monitored(metrics))
        if self.dist.is_main:  # the other ranks update the state the same way, and write nothing
            self.ckpts.after_epoch(state, metrics, lambda: self.payload(metrics))
        else:
            self.ckpts.after_epoch(state, metrics, lambda: {}, write=False)
        self.logger.log_scalars(metrics, state.step)
        self.logger.log_images(images, state.step)
        self.save_last(metrics)
        if not self.dist.is_main:
            return
        shown = {k: round(v, 4) for k, v in metrics.items() if k in ("train_loss", "mean_dice")}
        skipped_note = (
            f" ({skipped} step(s) skipped: non-finite loss or gradient)" if skipped else ""
        )
        print(
            f"epoch {state.epoch}/{t['max_epochs']} "
            + " ".join(f"{k}={v}" for k, v in shown.items())
            + skipped_note
        )

    def check_early_stopping(self, metrics: dict[str, float]) -> None:
        """Count validations without improvement; set ``state.stop_reason`` past the patience."""
        es, state = self.early_stopping, self.state
        if not es or es["patience"] is None:
            return
        if es["monitor"] not in metrics:
            raise ValueError(f"trainer.early_stopping.monitor: '{es['monitor']}' is not logged")
        value = float(metrics[es["monitor"]])
        best = state.early_stop_best
        # A NaN (precision with no foreground predicted) never becomes the value to beat.
        if math.isfinite(value) and (
            best is None or improves(value, best, es["mode"], es["min_delta"])
        ):
            state.early_stop_best, state.stale_validations = value, 0
            return
        state.stale_validations += 1
        if state.stale_validations >= es["patience"]:
            how = f"did not improve on {best:.4f}" if best is not None else "was never finite"
            state.stop_reason = (
                f"{es['monitor']} {how} for {es['patience']} validations "
                f"(early stopping at epoch {state.epoch})"
            )

    def validate(
        self, val_cases: list, names: list[str], score_reference: bool = False
    ) -> tuple[dict[str, float], list[dict]]:
        d = self.cfg["data"]
        return validate(
            self.model, val_cases, d["num_classes"], tuple(d["patch_size"]), self.device,
            self.t["precision"] if self.t["precision"] != "fp16" else "fp32",
            self.t["val_overlap"], self.t["val_sw_batch_size"], tuple(names),
            self.t["val_tolerance_mm"], lambda cases: gather_lists(cases, self.dist),
            self.val_mirror_axes, self.data.ignore_label, score_reference,
        )  # fmt: skip

    def panels(self, cases: list) -> dict[str, np.ndarray]:
        """A middle-slice panel (image, label, prediction) of each case, for the loggers."""
        d, t = self.cfg["data"], self.t
        precision = t["precision"] if t["precision"] != "fp16" else "fp32"
        panels = {}
        self.model.eval()
        for case in cases:
            probs = predict_case(self.model, case.image, d["num_classes"], tuple(d["patch_size"]),
                                 self.device, precision, t["val_overlap"],
                                 t["val_sw_batch_size"])  # fmt: skip
            panels[f"val/{case.name}"] = slice_panel(case.image, case.label, probs.argmax(0))
        self.model.train()
        return panels

    def total_steps(self) -> int:
        """Steps this run will take: the whole run, or what fits the time budget."""
        return self.state.planned_steps or self.t["max_epochs"] * self.t["steps_per_epoch"]

    def finished(self) -> bool:
        return (
            bool(self.state.stop_reason)
            or self.state.epoch >= self.t["max_epochs"]
            or self.state.step >= self.total_steps()
            or self.out_of_time()
        )

    def fit_schedule_to_time_budget(self) -> None:
        """With ``trainer.max_time_minutes``, size the run and its LR decay to the measured speed.

        Called every ``_CALIBRATION_STEPS`` steps: the step count that fits the remaining budget
        at the mean speed since the warm-up, keeping 1.1x the timed final validation (at least
        10 s) for the end, becomes the schedule's horizon, so the learning rate reaches zero as
        the time runs out instead of being cut off half-way. Re-fitting corrects a first
        estimate taken while the machine was briefly busy (one-shot, it once planned 9 % fewer
        steps than fitted) and shortens the plan when the machine slows down. The count is stored in the run state; a
        resumed run goes on re-fitting from its stored training time.
        """
        budget = self.t["max_time_minutes"]
        node = self.cfg["scheduler"]
        if budget is None or node.get("total_steps") is not None:
            return
        warm = getattr(self, "warm_elapsed", None)  # None when resumed past the warm-up
        if warm is None:
            seconds_per_step = self.state.elapsed_seconds / self.state.step
        else:
            seconds_per_step = (self.state.elapsed_seconds - warm) / (
                self.state.step - _WARMUP_STEPS
            )
        reserve = max(10.0, _VAL_MARGIN * self.final_val_seconds)
        remaining = 60.0 * budget - self.state.elapsed_seconds - reserve
        planned = self.state.step + max(int(remaining / seconds_per_step), 1)
        planned = min(planned, self.t["max_epochs"] * self.t["steps_per_epoch"])
        first = not self.state.planned_steps
        self.state.planned_steps = planned
        warmup = node.get("warmup_steps")
        for fn in self._lr_lambdas():
            fn.total_steps = planned
            if warmup is not None and hasattr(fn, "warmup_steps"):
                # A plan shorter than twice the warm-up keeps half its steps for the decay
                # (else it ends still warming up, far from a learning rate of zero).
                fn.warmup_steps = min(int(warmup), planned // 2)
        if first:
            print(f"Time budget {budget} min at {seconds_per_step:.2f} s/step: {planned} steps "
                  f"and {reserve:.0f} s for the final validation and checkpoint (re-fitted to "
                  "the measured speed as the run goes).")  # fmt: skip

    def time_final_validation(self, val_cases: list) -> float:
        """Seconds the final validation will take: its median case by sliding windows validated
        (with the final metrics and mirroring; the metrics of the reference against itself, as
        a trained network's prediction will cost) and timed, scaled to all cases by their
        window counts (on fold 0 of the hippocampus: 28x one 8-window case, as measured).

        Validation time depends on the network, the patch, the mirroring and the cases, so a
        fixed reserve either wastes a small run's budget or lets a large one overrun it. A
        cheap case is timed once more and the faster pass counts: the first pass also pays
        one-off set-up costs, which the final validation will not pay again.
        """
        if not val_cases:
            return 0.0
        names, patch = self.t["final_val_metrics"], self.cfg["data"]["patch_size"]
        windows = [window_count(c.image.shape[1:], patch, self.t["val_overlap"]) for c in val_cases]
        median = sorted(range(len(windows)), key=windows.__getitem__)[len(windows) // 2]

        def timed() -> float:
            start = time.perf_counter()
            self.validate([val_cases[median]], names, score_reference=True)
            return time.perf_counter() - start

        seconds = timed()
        if seconds < 5.0:  # the first pass also set up the kernels; the final validation won't
            seconds = min(seconds, timed())
        seconds *= sum(windows) / windows[median]
        if self.dist.is_main:
            print(f"Final validation timed at about {seconds:.0f} s ({len(val_cases)} cases).")
        return seconds

    def planned_epochs(self) -> int:
        """Epochs the run is planned to last: the time budget's plan once fitted, else
        ``trainer.max_epochs``. A loss schedule (``loss=adaptive_schedule``) spans these."""
        if self.t["max_time_minutes"] is not None and self.state.planned_steps:
            return max(1, math.ceil(self.state.planned_steps / self.t["steps_per_epoch"]))
        return self.t["max_epochs"]

    def _lr_lambdas(self) -> list:
        return [
            fn for fn in getattr(self.scheduler, "lr_lambdas", []) if hasattr(fn, "total_steps")
        ]

    def _apply_horizon(self, horizons: list[int]) -> None:
        """After a resume, the schedule spans this command's horizon, not the checkpoint's.

        An extended run (``trainer.max_epochs`` raised, or ``scheduler.total_steps`` given)
        would otherwise keep the saved horizon and train on at a learning rate of zero. A run
        on a time budget keeps the horizon it planned (and goes on re-fitting it).
        """
        planned = self.state.planned_steps if self.t["max_time_minutes"] is not None else None
        for fn, horizon in zip(self._lr_lambdas(), horizons, strict=True):
            new = planned or horizon
            if new != fn.total_steps and self.dist.is_main:
                print(f"Learning-rate schedule: {fn.total_steps} -> {new} steps.")
            fn.total_steps = new

    def out_of_time(self) -> bool:
        """The budget is spent, counting the time the final validation will take once a step
        was taken (a validation longer than the whole budget still follows one step)."""
        budget = self.t["max_time_minutes"]
        if budget is None:
            return False
        spent = self.state.elapsed_seconds
        if self.state.step:
            spent += _VAL_MARGIN * self.final_val_seconds
        return spent >= 60.0 * budget

    def save_mid_epoch(self) -> None:
        """``last.pt`` part-way through an epoch, with every rank's share of the epoch's loss."""
        s = self.state
        s.rank_epoch_losses = gather_lists([[s.epoch_loss_sum, s.epoch_skipped]], self.dist)
        self.save_last()

    def save_last(self, metrics: dict[str, float] | None = None) -> None:
        """``last.pt`` (rank 0 only)."""
        if self.dist.is_main:
            self.ckpts.save_last(self.payload(metrics))

    def payload(self, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """Everything a resume needs, plus metadata (``torch.load(weights_only=True)``-safe)."""
        return {
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "state": self.state.state_dict(),
            "rng": rng_state(),
            "logger": self.logger.state_dict() if hasattr(self, "logger") else {},
            "config": self.cfg,
            "plan": self.data.plan,  # how inference must preprocess a new scan
            "meta": {
                **checkpoint_metadata(),
                "epoch": self.state.epoch,
                "step": self.state.step,
                "metrics": dict(metrics or {}),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        }

    def load(self, path: Path, ckpt: dict) -> dict:
        """Restore everything :meth:`payload` holds; returns the loggers' saved states."""
        changed = check_resume_config(ckpt.get("config") or {}, self.cfg, str(path))
        if changed and self.dist.is_main:
            print("Resuming with changed settings:\n" + "\n".join(changed))
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        horizons = [fn.total_steps for fn in self._lr_lambdas()]  # this command's horizon
        self.scheduler.load_state_dict(ckpt["scheduler"])  # also restores the saved horizon
        self.scaler.load_state_dict(ckpt["scaler"])
        # Checkpoints from before the loss kept its running means (extra state) still load.
        keys = self.loss_fn.load_state_dict(ckpt["loss"], strict=False)
        if keys.unexpected_keys or any(not k.endswith("_extra_state") for k in keys.missing_keys):
            self.loss_fn.load_state_dict(ckpt["loss"])  # raises, naming the keys
        if self.ema is not None:
            self.ema.load_state_dict(ckpt.get("ema") or unwrap_model(self.model).state_dict())
        self.state.load_state_dict(ckpt["state"])
        shares, self.state.rank_epoch_losses = self.state.rank_epoch_losses, []
        if len(shares) == self.dist.world_size:  # a mid-epoch checkpoint: this rank's own share
            self.state.epoch_loss_sum, self.state.epoch_skipped = shares[self.dist.rank]
        self._apply_horizon(horizons)
        set_rng_state(ckpt["rng"])
        print(f"Resumed from {path} at epoch {self.state.epoch}, step {self.state.step}.")
        return ckpt.get("logger", {})

    def summary(self) -> dict[str, Any]:
        """Best results, cost and where the run lives; also written to ``summary.json``.

        ``complete`` is true once the run needs no resume (it reached its end or stopped early
        on its own), which is what a re-run sweep checks before skipping a job.
        """
        s, d = self.state, self.cfg["data"]
        digests = gather_lists([weights_digest(unwrap_model(self.model))], self.dist)
        if not self.dist.is_main:
            return {}
        best = None if math.isinf(s.best_metric) else s.best_metric
        summary = {
            "complete": self.finished() and not s.epoch_steps,
            "best_mean_dice": None if math.isinf(s.best_mean_dice) else s.best_mean_dice,
            "monitor": self.ckpts.monitor,
            "best_metric": best,
            "best_epoch": s.best_epoch,
            "stop_reason": s.stop_reason,
            "epochs": s.epoch,
            "steps": s.step,
            "skipped_steps": s.skipped_steps,
            **model_cost(unwrap_model(self.model), d["patch_size"], d["in_channels"]),
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            "seconds_per_epoch": round(s.elapsed_seconds / max(s.epoch, 1), 2),
            "train_seconds": round(s.elapsed_seconds, 1),
            "run_dir": str(self.run_dir),
            "world_size": self.dist.world_size,
            "weight_digests": digests,  # one per rank: equal when the ranks are in sync
        }
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary


def set_deterministic(on: bool) -> None:
    """``trainer.deterministic``: deterministic kernels (warning where torch has none).

    cuDNN autotuning is off (it may pick different kernels per run) and cuBLAS gets the
    fixed workspace its deterministic mode needs (read when CUDA starts, so set it early).
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


def resolve_resume(resume: str | None, run_dir: Path) -> tuple[Path, dict] | None:
    """The checkpoint to resume from and its contents: a file, a run dir, or ``auto``.

    For a run dir (``auto``: this run's dir) the newest checkpoint that loads is taken, so a
    truncated ``last.pt`` falls back to ``last-prev.pt`` (and then best, top-k, every-N ones)
    with a warning. ``auto`` with no checkpoint starts afresh.
    """
    if not resume:
        return None
    path = run_dir if resume == "auto" else Path(resume)
    if path.is_dir() or resume == "auto":
        found = find_resumable(path / "checkpoints")
        if found is None and resume != "auto" and not (path / "checkpoints").is_dir():
            raise FileNotFoundError(
                f"trainer.resume: {path} saved no checkpoint (stopped before its first epoch "
                "ended?); train it again without trainer.resume"
            )
        if found is None and resume != "auto":
            raise FileNotFoundError(
                f"trainer.resume: no readable checkpoint in {path / 'checkpoints'}"
            )
        return found
    if not path.is_file():
        raise FileNotFoundError(f"trainer.resume: no checkpoint at {path}")
    return path, load_training_checkpoint(path)
