"""``trainer.deterministic=true``: two runs with the same seed write the same ``metrics.csv``."""

from __future__ import annotations

import filecmp

import pytest
import torch

from hybrid_unet.engine.checkpoint import load_checkpoint
from hybrid_unet.engine.trainer import set_deterministic
from tests.reliability.harness import rows, train

pytestmark = pytest.mark.reliability


@pytest.mark.row("determinism", "two runs, same seed, trainer.deterministic=true",
                 "identical metrics.csv (all but elapsed_s) and bit-identical weights")  # fmt: skip
def test_same_seed_same_metrics(tmp_path, observe):
    try:
        for name in ("a", "b"):
            train(tmp_path / name, "trainer.deterministic=true", "seed=7")
            assert torch.are_deterministic_algorithms_enabled()
    finally:
        set_deterministic(False)
    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert a == b and len(a) == 4
    assert filecmp.cmp(tmp_path / "a" / "splits.json", tmp_path / "b" / "splits.json", False)
    wa = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    observe(f"{len(a)} rows x {len(a[0])} columns equal, {len(wa)} tensors bit-identical")
