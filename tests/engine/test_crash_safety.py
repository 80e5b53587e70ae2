"""SIGKILL at random points, resume each time: the run ends as if never interrupted.

SIGTERM stops at a step boundary with a checkpoint of exactly the steps done.
"""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hybrid_unet.engine.checkpoint import load_checkpoint
from tests.helpers import TINY, run_train

pytestmark = pytest.mark.slow

EPOCHS = ["trainer.max_epochs=8"]


def _start(args: list[str], cwd: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """The training CLI in the background, stdout (unbuffered) to a file."""
    env = {**os.environ, "HYBRID_UNET_RUNS": str(cwd / "runs"), "WANDB_MODE": "offline",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    log = cwd / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hybrid_unet.train", *args],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, log


def _rows(run_dir: Path) -> list[dict]:
    try:
        with open(run_dir / "metrics.csv") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while proc.poll() is None and not ready():
        assert time.monotonic() < end, "the run made no progress"
        time.sleep(0.05)


def test_sigkill_three_times_then_resume_ends_identical(tmp_path):
    rng = random.Random(6)
    straight, _ = _start([*TINY, *EPOCHS, "run_name=straight"], tmp_path, "straight")
    run_dir = tmp_path / "runs" / "killed"
    kills = 0
    for attempt, rows_before_kill in enumerate((2, 4, 6)):
        args = [*TINY, *EPOCHS, "run_name=killed"] if attempt == 0 else [
            f"trainer.resume={run_dir}"
        ]  # fmt: skip
        proc, log = _start(args, tmp_path, f"attempt{attempt}")
        # Not during start-up (Hydra rewrites .hydra/ then): once training has resumed.
        _wait_for(
            proc, lambda log=log, first=attempt == 0: first or "Resumed from" in log.read_text()
        )
        _wait_for(
            proc,
            lambda n=rows_before_kill: (
                (run_dir / "checkpoints" / "last.pt").exists() and len(_rows(run_dir)) >= n
            ),
        )
        time.sleep(rng.uniform(0.0, 0.6))  # anywhere in an epoch, a validation or a save
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills == 3
    final = run_train([f"trainer.resume={run_dir}"], tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert straight.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    a = load_checkpoint(tmp_path / "runs" / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 24
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    rows_a, rows_b = _rows(tmp_path / "runs" / "straight"), _rows(run_dir)
    assert len(rows_a) == len(rows_b) == 8
    for ra, rb in zip(rows_a, rows_b, strict=True):
        ra.pop("elapsed_s"), rb.pop("elapsed_s")
        assert ra == rb


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "runs" / "term"
    proc, log = _start([*TINY, *EPOCHS, "run_name=term"], tmp_path, "term")
    _wait_for(proc, lambda: len(_rows(run_dir)) >= 1)
    time.sleep(random.Random(15).uniform(0.0, 0.5))
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    text = log.read_text()
    match = re.search(r"Stopped by SIGTERM at step (\d+)", text)
    assert match, text[-2000:]
    assert f"resume with trainer.resume={run_dir}" in text
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["state"]["step"] == int(match.group(1)) == ckpt["meta"]["step"]
    assert ckpt["state"]["step"] >= 3
