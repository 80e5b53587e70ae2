"""Faults during training: kills, a full disk, corrupt checkpoints, dying workers and loggers.

After each: the checkpoints written before are intact, a resume continues, and the run ends
with the weights and ``metrics.csv`` of the uninterrupted reference run.
"""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import signal
from pathlib import Path

import pytest
import torch

from hybrid_unet.cli import user_error
from hybrid_unet.engine import build
from hybrid_unet.engine import checkpoint as checkpoint_module
from hybrid_unet.engine.checkpoint import CheckpointError, CheckpointWriteError, load_checkpoint
from hybrid_unet.engine.trainer import LoaderWorkerDied
from tests.helpers import TINY
from tests.reliability.harness import (
    FAULT_RUN,
    assert_one_error,
    assert_same_result,
    cli,
    kill_self,
    run_forked,
    temp_files,
    train,
)

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

STEPS, SAVES = 12, 4  # the fault run: 4 epochs x 3 steps, last.pt after each epoch
EVAL_FORWARDS = 4  # 4 validations x 1 case x 1 window


def _hook_forward(fire) -> None:
    """Make ``build.build_model`` return a model that calls ``fire(training, n)`` per forward."""
    real = build.build_model
    counts = {True: 0, False: 0}

    def build_with_hook(cfg, **kwargs):
        model = real(cfg, **kwargs)

        def hook(module, args):
            counts[module.training] += 1
            fire(module.training, counts[module.training])

        model.register_forward_pre_hook(hook)
        return model

    build.build_model = build_with_hook


def _all_checkpoints_load(run_dir: Path) -> list[int]:
    """Every checkpoint file loads (none torn); returns the steps they hold. A torn write's
    temporary (``.tmp-<pid>-last.pt``) is not a checkpoint: resuming deletes it."""
    files = sorted((run_dir / "checkpoints").glob("[!.]*.pt"))
    return [load_checkpoint(p)["state"]["step"] for p in files]


def _kill_and_resume(tmp_path, reference_run, name, arm) -> tuple[list[int], str]:
    run_dir = tmp_path / name

    def child():
        arm()
        train(run_dir)

    died = run_forked(child, tmp_path / f"{name}.log")
    assert died.signal == signal.SIGKILL, died.output[-3000:]
    steps = _all_checkpoints_load(run_dir) if (run_dir / "checkpoints").is_dir() else []
    train(run_dir, "trainer.resume=auto")
    assert_same_result(run_dir, reference_run)
    assert not temp_files(run_dir), "a torn temporary file survived the resume"
    return steps, died.output


@pytest.mark.row("fault", "SIGKILL during a training step",
                 "checkpoints intact; resume=auto ends identical to an uninterrupted run")  # fmt: skip
def test_sigkill_during_a_step(tmp_path, reference_run, observe):
    for k in random.Random(1).sample(range(2, STEPS + 1), 2):
        _kill_and_resume(
            tmp_path, reference_run, f"step{k}",
            lambda k=k: _hook_forward(lambda training, n: training and n == k and kill_self()),
        )  # fmt: skip
        observe(f"killed in step {k}, resumed, identical", cases=1)


@pytest.mark.row("fault", "SIGKILL while writing a checkpoint",
                 "old last.pt intact, torn temp file removed, resume ends identical")  # fmt: skip
def test_sigkill_during_a_checkpoint_write(tmp_path, reference_run, observe):
    real_save = torch.save
    for n in random.Random(2).sample(range(2, SAVES + 1), 2):

        def arm(n=n):
            calls = {"n": 0}

            def half_then_die(obj, f, *args, **kwargs):
                calls["n"] += 1
                if calls["n"] == n:
                    buf = io.BytesIO()
                    real_save(obj, buf)
                    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                    f.flush()
                    kill_self()
                return real_save(obj, f, *args, **kwargs)

            checkpoint_module.torch.save = half_then_die

        steps, _ = _kill_and_resume(tmp_path, reference_run, f"save{n}", arm)
        assert steps, "no checkpoint before the torn write"
        observe(f"killed half-way through save {n}; {len(steps)} earlier file(s) loaded", cases=1)


@pytest.mark.row("fault", "SIGKILL during validation",
                 "checkpoints intact; resume ends identical")  # fmt: skip
def test_sigkill_during_validation(tmp_path, reference_run, observe):
    for j in random.Random(3).sample(range(1, EVAL_FORWARDS + 1), 2):
        _kill_and_resume(
            tmp_path, reference_run, f"val{j}",
            lambda j=j: _hook_forward(lambda training, n: not training and n == j and kill_self()),
        )  # fmt: skip
        observe(f"killed at validation forward {j}, resumed, identical", cases=1)


@pytest.mark.row("fault", "SIGTERM (preemption) mid-step",
                 "finishes the step, saves it, exits 143 with a resume hint; resume identical")  # fmt: skip
def test_sigterm_saves_the_current_step(tmp_path, reference_run, observe, capsys):
    k = random.Random(4).randrange(2, STEPS)
    real = build.build_model
    try:
        _hook_forward(
            lambda training, n: training and n == k and os.kill(os.getpid(), signal.SIGTERM)
        )
        summary, _ = train(tmp_path)
    finally:
        build.build_model = real
    out = capsys.readouterr().out
    assert f"Stopped by SIGTERM at step {k}" in out and f"trainer.resume={tmp_path}" in out
    assert summary["steps"] == k and not summary["complete"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["state"]["step"] == k
    train(tmp_path, "trainer.resume=auto")
    assert_same_result(tmp_path, reference_run)
    observe(f"SIGTERM in step {k}: saved step {k}, resumed, identical")


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: then ``write`` fails with ENOSPC."""

    room = 64 * 1024

    def write(self, data) -> int:
        size = len(memoryview(data))
        if size > _FullDisk.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _FullDisk.room -= size
        return super().write(data)


@pytest.mark.row("fault", "disk full while writing a checkpoint (ENOSPC writer)",
                 "one-line error naming the file; last.pt and last-prev.pt intact; resume identical")  # fmt: skip
def test_full_disk_during_a_checkpoint_write(tmp_path, reference_run, observe, monkeypatch):
    for n in random.Random(5).sample(range(2, SAVES + 1), 2):
        run_dir = tmp_path / f"full{n}"
        calls = {"n": 0}

        def opener(path, mode="r", *args, n=n, calls=calls, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                _FullDisk.room = 64 * 1024
                return _FullDisk(path, mode)
            return open(path, mode, *args, **kwargs)

        monkeypatch.setattr(checkpoint_module, "open", opener, raising=False)
        with pytest.raises(CheckpointWriteError) as info:
            train(run_dir)
        monkeypatch.undo()
        message = user_error(info.value)
        assert message is not None and "\n" not in message
        assert "No space left on device" in message and f"trainer.resume={run_dir}" in message
        assert str(run_dir / "checkpoints") in message
        steps = _all_checkpoints_load(run_dir)
        assert steps and (run_dir / "checkpoints" / "last.pt").exists()
        assert not temp_files(run_dir)
        train(run_dir, "trainer.resume=auto")
        assert_same_result(run_dir, reference_run)
        name = message.split(": ", 1)[0].rsplit("/", 1)[-1]
        observe(
            f"write {n} ({name}) failed: '{message.split(': ', 1)[1][:55]}…'; resumed, identical"
        )


def _same(a, b) -> bool:
    """Deep equality of checkpoint contents (tensors bit for bit, NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b or (a != a and b != b)


def _copy_run(reference_run: Path, dest: Path) -> Path:
    shutil.copytree(reference_run, dest)
    return dest


@pytest.mark.row("fault", "last.pt truncated",
                 "resume=auto warns and falls back to last-prev.pt; ends identical")  # fmt: skip
def test_truncated_last_falls_back_to_last_prev(tmp_path, reference_run, observe, capsys):
    run_dir = _copy_run(reference_run, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.pt"
    data = last.read_bytes()
    rng = random.Random(6)
    for cut in [0, 1, 100, *rng.sample(range(len(data) - 1), 17)]:  # loader checks, no training
        last.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"last\.pt"):
            load_checkpoint(last)
    observe("20 truncations of last.pt refused by the loader", cases=20)
    last.write_bytes(data[: rng.randrange(len(data))])
    named = cli([*TINY, *FAULT_RUN, f"trainer.resume={last}"], tmp_path)  # named explicitly
    assert_one_error(named, str(last), "truncated or corrupt")
    observe("trainer.resume=<the truncated file>: one error line naming it", cases=1)
    train(run_dir, "trainer.resume=auto")
    err = capsys.readouterr()
    assert f"warning: skipping unreadable checkpoint {last}" in err.err
    assert "last-prev.pt at epoch 3" in err.out
    assert_same_result(run_dir, reference_run)
    observe("resume=auto fell back to last-prev.pt with a warning; identical", cases=1)


@pytest.mark.row("fault", "checkpoint with a flipped byte",
                 "CRC check refuses it (torch.load alone loads wrong weights); resume falls back")  # fmt: skip
def test_flipped_byte_is_detected_and_resume_falls_back(tmp_path, reference_run, observe, capsys):
    run_dir = _copy_run(reference_run, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.pt"
    data = last.read_bytes()
    good = load_checkpoint(last)
    rng = random.Random(7)
    refused = 0
    for pos in rng.sample(range(len(data)), 60):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        last.write_bytes(flipped)
        try:
            got = load_checkpoint(last)
        except CheckpointError:
            refused += 1
            continue
        assert _same(got, good), f"the flip at byte {pos} loaded silently"
    observe(f"60 random bit flips: {refused} refused, the rest changed nothing", cases=60)
    # The point of the CRC check: torch.load itself accepts a flip inside a tensor.
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    last.write_bytes(flipped)
    assert not _same(torch.load(last, weights_only=True), good)
    with pytest.raises(CheckpointError, match="CRC"):
        load_checkpoint(last)
    train(run_dir, "trainer.resume=auto")
    assert f"skipping unreadable checkpoint {last}" in capsys.readouterr().err
    assert_same_result(run_dir, reference_run)
    observe("resume=auto skipped the flipped last.pt, used last-prev.pt; identical", cases=1)


def _child_processes() -> list[int]:
    """Processes (zombies included) whose parent is this one, from ``/proc``."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == me:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.row("fault", "data loader worker killed (num_workers=2)",
                 "no hang: one-line error with a resume hint; resume (any worker count) identical")  # fmt: skip
def test_a_dead_loader_worker_ends_cleanly_and_resume_is_identical(
    tmp_path, reference_run, observe, monkeypatch
):
    from hybrid_unet.data.patches import PatchDataset

    marker = tmp_path / "worker-died"
    real_getitem = PatchDataset.__getitem__
    k = random.Random(8).randrange(24, 34)  # batch 12-16: fetched around steps 4-10

    def getitem(self, index):
        if index == k and not marker.exists():
            marker.touch()
            kill_self()  # in the worker process
        return real_getitem(self, index)

    monkeypatch.setattr(PatchDataset, "__getitem__", getitem)
    run_dir = tmp_path / "run"
    children = set(_child_processes())  # e.g. the wandb-core service an earlier W&B run started
    signal.alarm(120)  # a hang fails the test instead of blocking the suite
    try:
        with pytest.raises(LoaderWorkerDied) as info:
            train(run_dir, "data.num_workers=2")
    finally:
        signal.alarm(0)
    message = user_error(info.value)
    assert message and "\n" not in message and f"trainer.resume={run_dir}" in message
    left = set(_child_processes()) - children
    assert not left, "the other worker outlived the error (and the dead one unreaped)"
    _all_checkpoints_load(run_dir)
    train(run_dir, "trainer.resume=auto", "data.num_workers=2")
    assert_same_result(run_dir, reference_run)
    observe(f"worker killed at item {k}: '{message[:60]}…'; resumed, identical")


@pytest.mark.row("fault", "a dead worker reported inside torch.autocast's __enter__",
                 "autocast state restored: the next run in the process trains as the reference")  # fmt: skip
def test_a_worker_death_inside_autocast_enter_leaves_no_autocast_state(
    tmp_path, reference_run, observe, monkeypatch
):
    """The DataLoader reports a dead worker from its SIGCHLD handler, that is at whatever line
    the main thread runs. Landing in ``torch.autocast.__enter__`` after it raised the nesting
    level, it skipped ``__exit__``: the level never returned to 0, the cast-weight cache was never
    cleared, and every later bf16 run in the process (the next jobs of an in-process sweep) kept
    computing with the weights of its first step. CI saw this as a later run that barely learned
    and an lr of 1e9 that never diverged."""
    real_enter, calls = torch.autocast.__enter__, {"n": 0}

    def enter_then_worker_dies(self):
        real_enter(self)
        calls["n"] += 1
        if calls["n"] == 5:  # a training step of epoch 2
            raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")
        return self

    monkeypatch.setattr(torch.autocast, "__enter__", enter_then_worker_dies)
    with pytest.raises(LoaderWorkerDied):
        train(tmp_path / "died")
    monkeypatch.undo()
    assert not torch.is_autocast_enabled("cpu")
    train(tmp_path / "next")
    assert_same_result(tmp_path / "next", reference_run)
    observe("worker death reported inside autocast __enter__: state restored, next run identical")


def _tb_add_scalar_fails(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device (tensorboard)")


@pytest.mark.row("fault", "a logger raises (TensorBoard write, CSV write, W&B start)",
                 "one warning per logger, training continues to the same result")  # fmt: skip
def test_failing_loggers_do_not_stop_training(
    tmp_path, reference_run, observe, monkeypatch, capsys
):
    import wandb
    from torch.utils.tensorboard import SummaryWriter

    from hybrid_unet.logging.csv import CSVLogger

    monkeypatch.setattr(SummaryWriter, "add_scalar", _tb_add_scalar_fails)
    real_write, calls = CSVLogger._write, {"n": 0}

    def csv_fails_once(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise PermissionError(errno.EACCES, "Permission denied", str(self.path))
        real_write(self)

    def wandb_unreachable(*args, **kwargs):
        raise ConnectionError("W&B service unreachable")

    monkeypatch.setattr(CSVLogger, "_write", csv_fails_once)
    monkeypatch.setattr(wandb, "init", wandb_unreachable)
    summary, _ = train(tmp_path, "logger=[csv,tensorboard,wandb]")
    err = capsys.readouterr().err
    assert summary["complete"]
    for name in ("tensorboard", "csv"):
        assert err.count(f"warning: logger '{name}' failed in log_scalars") == 1, err
    assert "warning: logger 'tensorboard' failed 4 time(s)" in err
    assert "warning: logger 'wandb' could not start (ConnectionError" in err
    assert_same_result(tmp_path, reference_run)  # the CSV caught up after its failed write
    observe("TensorBoard failed 4x, CSV once, W&B at start: 3 warnings, run complete, identical",
            cases=3)  # fmt: skip


@pytest.mark.row("fault", "non-finite loss in consecutive steps",
                 "stops with one message naming the steps and the remedies")  # fmt: skip
def test_consecutive_non_finite_steps_stop_with_one_message(tmp_path, monkeypatch, observe):
    from hybrid_unet.engine import trainer as trainer_module
    from hybrid_unet.engine.step import TrainingDiverged

    real_step = trainer_module.train_step

    def poisoned(model, loss_fn, optimizer, scaler, batches, *args):
        if optimizer.state:  # after the first step every input is NaN
            batches = [{**b, "image": torch.full_like(b["image"], float("nan"))} for b in batches]
        return real_step(model, loss_fn, optimizer, scaler, batches, *args)

    monkeypatch.setattr(trainer_module, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"3 consecutive steps .* \(up to step 4\)") as info:
        train(tmp_path, "trainer.max_bad_steps=3")
    assert "\n" not in user_error(info.value)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")  # epoch 1, before the NaNs
    assert last["state"]["step"] == 3
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    observe("NaN inputs from step 2: stopped at step 4 with one message; last.pt finite")
