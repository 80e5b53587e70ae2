"""Running training under faults: forked children that die for real, the CLI in-process.

Forking the test process gives a child that already imported torch, Hydra and MONAI, so a
run killed by a real SIGKILL costs seconds, not an interpreter start-up. The child trains with
one intra-op thread (``trainer.num_threads=1``), so it never enters an OpenMP region that the
fork could have left without its threads.
"""

from __future__ import annotations

import csv
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from hybrid_unet.engine.checkpoint import load_checkpoint
from tests.helpers import CliResult, cli, train_in_process  # noqa: F401 (re-exported)

# 4 epochs of 3 steps, validated every epoch: a kill can land in any part of a run.
FAULT_RUN = [
    "trainer.max_epochs=4",
    "logger=[csv]",
    "trainer.log_images=false",
    "trainer.final_val_metrics=[dice]",
    "data.max_val_cases=1",
]


@dataclass
class Child:
    """How a forked child ended: ``signal`` (e.g. SIGKILL) or ``exit_code``, and its output."""

    signal: int | None
    exit_code: int | None
    output: str


def run_forked(fn: Callable[[], None], log: Path, timeout: float = 600) -> Child:
    """Run ``fn`` in a forked child (stdout and stderr to ``log``) and wait for it. ``timeout``
    only catches a hung child (they take seconds); it is no speed check, so it is generous."""
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1), os.dup2(fd, 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            torch.set_num_threads(1)
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
    end = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the child hung for {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
    text = log.read_text() if log.exists() else ""
    if os.WIFSIGNALED(status):
        return Child(os.WTERMSIG(status), None, text)
    return Child(None, os.WEXITSTATUS(status), text)


def kill_self() -> None:
    """SIGKILL this process: no handler, no ``finally``, no flush, like the OOM killer."""
    os.kill(os.getpid(), signal.SIGKILL)


def train(run_dir: Path, *extra: str):
    """The fault run (``FAULT_RUN``) in this process; returns ``(summary, trainer)``."""
    return train_in_process([*FAULT_RUN, *extra], run_dir)


def rows(run_dir: Path) -> list[dict]:
    """``metrics.csv`` without the wall-clock column (the only one allowed to differ)."""
    with open(run_dir / "metrics.csv") as f:
        out = list(csv.DictReader(f))
    for row in out:
        row.pop("elapsed_s", None)
    return out


def assert_same_result(run_dir: Path, reference: Path) -> None:
    """The run ended where the uninterrupted ``reference`` did: same weights, same metrics."""
    a = load_checkpoint(reference / "checkpoints" / "last.pt")
    b = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert b["state"]["step"] == a["state"]["step"]
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert rows(run_dir) == rows(reference)


def temp_files(run_dir: Path) -> list[Path]:
    return [p for p in (run_dir / "checkpoints").iterdir() if ".tmp" in p.name]


def assert_one_error(result: CliResult, *named: str) -> str:
    """Exit 2, no traceback, ``error:`` first and only problem lines after it; returns it."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code == 2, (result.code, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert all(line.startswith("  - ") for line in lines[1:]), result.stderr
    for text in named:
        assert text in result.stderr, (text, result.stderr)
    return "\n".join(lines)
