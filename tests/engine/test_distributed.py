"""torchrun on CPU (gloo): disjoint data per rank, one run dir, ranks end with equal weights."""

from __future__ import annotations

import csv
import itertools
import json
import os
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


@pytest.mark.slow
def test_torchrun_two_ranks_share_one_run_and_end_in_sync(tmp_path):
    # One fresh try more when a rank died in gloo with "terminate called without an active
    # exception" (SIGABRT): seen once in ~10 full-suite runs on this 2-core machine, never
    # reproduced alone (see the session note); any other failure fails at once.
    for attempt in range(2):
        runs_dir = tmp_path / f"try{attempt}" / "runs"
        runs_dir.parent.mkdir()
        env = {**os.environ, "HYBRID_UNET_RUNS": str(runs_dir), "WANDB_MODE": "offline"}
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             "-m", "hybrid_unet.train", *TINY, "trainer.max_epochs=2", "data.max_val_cases=3"],
            cwd=runs_dir.parent, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode == 0 or "terminate called without an active" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list(runs_dir.iterdir())
    assert len(runs) == 1  # both ranks in the torchrun id's dir
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    first, second = summary["weight_digests"]
    assert first == second  # bitwise-equal weights on both ranks
    with open(runs[0] / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]  # rank 0 alone logged
    assert result.stdout.count("Done: best mean Dice") == 1
