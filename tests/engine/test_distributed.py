"""torchrun on CPU (gloo): disjoint data per rank, one run dir, ranks end with equal weights."""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import subprocess
import sys

import pytest

from hybrid_unet.data.patches import StepSampler
from hybrid_unet.engine.distributed import RankSampler
from tests.helpers import TINY


def test_ranks_draw_disjoint_items_and_one_rank_is_the_step_order():
    taken = [list(itertools.islice(iter(RankSampler(5, 2, r, 3)), 8)) for r in range(3)]
    assert all(set(a).isdisjoint(b) for a, b in itertools.combinations(taken, 2))
    assert taken[1][:2] == [(5 * 3 + 1) * 2, (5 * 3 + 1) * 2 + 1]
    single = list(itertools.islice(iter(RankSampler(5, 2, 0, 1)), 8))
    assert single == list(itertools.islice(iter(StepSampler(10)), 8))


# Loaded by every process of a torchrun launch (PYTHONPATH): rank 1 receives SIGTERM after its
# 4th step, mid-way through epoch 2 of 3 steps; the ranks agree to stop there and save.
_SIGTERM_RANK_1 = """
import os
if os.environ.get("LOCAL_RANK") == "1":
    import signal
    from hybrid_unet.engine import trainer
    real_step, calls = trainer.train_step, []
    def step_then_sigterm(*args, **kwargs):
        calls.append(1)
        result = real_step(*args, **kwargs)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return result
    trainer.train_step = step_then_sigterm
"""


def _torchrun(args: list[str], runs_dir, pythonpath: str | None = None):
    """``torchrun --nproc_per_node=2 -m hybrid_unet.train ARGS`` writing runs under ``runs_dir``.

    One fresh try more when a rank died in gloo with "terminate called without an active
    exception" (SIGABRT): seen once in ~10 full-suite runs on this 2-core machine, never
    reproduced alone; any other failure is returned at once. The retry first removes the run
    dirs the failed try created (a resume's dir existed before and stays: it resumes again).
    """
    env = {**os.environ, "HYBRID_UNET_RUNS": str(runs_dir), "WANDB_MODE": "offline"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, *filter(None, [env.get("PYTHONPATH")])])
    before = set(runs_dir.iterdir()) if runs_dir.is_dir() else set()
    for attempt in range(2):
        if attempt:
            for new in set(runs_dir.iterdir()) - before:
                shutil.rmtree(new)
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             "-m", "hybrid_unet.train", *TINY, "trainer.max_epochs=2", "data.max_val_cases=3",
             *args],
            cwd=runs_dir.parent, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode == 0 or "terminate called without an active" not in result.stderr:
            break
    return result


def _rows(run_dir) -> list[tuple[str, str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return [(r["epoch"], r["train_loss"], r["mean_dice"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_torchrun_two_ranks_share_one_run_and_end_in_sync_also_after_a_stop(tmp_path):
    """A straight run; then the same run stopped mid-epoch by SIGTERM to rank 1 and resumed
    ends with the same weights and the same logged metrics. Rank 0 alone writes the checkpoint:
    every rank used to resume with rank 0's share of the epoch's loss, so the epoch's
    train_loss came out approximate (1.9401 against 1.9387 in a longer run)."""
    runs_dir = tmp_path / "runs"
    runs_dir.parent.mkdir(exist_ok=True)
    result = _torchrun([], runs_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list(runs_dir.iterdir())
    assert len(runs) == 1  # both ranks in the torchrun id's dir
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    first, second = summary["weight_digests"]
    assert first == second  # bitwise-equal weights on both ranks
    assert [r[0] for r in _rows(runs[0])] == ["1", "2"]  # rank 0 alone logged
    assert result.stdout.count("Done: best mean Dice") == 1

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SIGTERM_RANK_1)
    stopped = _torchrun(["run_name=b"], runs_dir, pythonpath=str(hook))
    assert "Stopped by a signal to another rank at step 4" in stopped.stdout, stopped.stderr[-3000:]
    resumed = _torchrun(["run_name=b", f"trainer.resume={runs_dir / 'b'}"], runs_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 1, step 4" in resumed.stdout
    assert (
        json.loads((runs_dir / "b" / "summary.json").read_text())["weight_digests"] == [first] * 2
    )
    assert _rows(runs_dir / "b") == _rows(runs[0])
