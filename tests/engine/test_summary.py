"""summary.json and the closing lines report best metrics, cost and time."""

from __future__ import annotations

import json

from hybrid_unet.train import summary_lines
from tests.helpers import train_in_process


def test_summary_reports_cost_and_time(tmp_path):
    summary, _ = train_in_process(
        ["trainer.max_epochs=2", "trainer.steps_per_epoch=1", "data.max_val_cases=1"], tmp_path
    )
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == summary
    assert summary["complete"] is True and summary["epochs"] == 2
    assert summary["parameters"] > 1000 and summary["flops_per_patch"] > 1e6
    assert summary["peak_memory_mb"] > 10 and summary["seconds_per_epoch"] > 0
    assert summary["monitor"] == "mean_dice" and summary["best_metric"] is not None
    text = summary_lines(summary)
    assert text.startswith("Done: best mean Dice")
    for part in ("parameters", "GFLOP per patch", "peak memory", "s per epoch", "compute in all"):
        assert part in text
    stopped = summary_lines({**summary, "complete": False})  # stopped by a signal, say
    assert stopped.startswith("Not finished (resumable): best mean Dice")
    # stopped before its first validation: it said "best mean Dice n/a at epoch -1"
    early = {**summary, "complete": False, "best_mean_dice": None, "best_metric": None,
             "best_epoch": -1, "epochs": 1}  # fmt: skip
    assert summary_lines(early).startswith("Not finished (resumable): no validation yet, 1 epoch")


def test_model_cost_counts_a_conv_by_hand_and_leaves_the_model_as_it_was():
    """2 x output voxels x (input channels x kernel volume) multiply-adds for a bias-free conv;
    the count runs on a copy in training mode, so batch-norm statistics and the mode stay."""
    import torch

    from hybrid_unet.engine.resources import model_cost

    model = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1, bias=False), torch.nn.BatchNorm3d(4)
    ).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cost = model_cost(model, [4, 8, 8], in_channels=1)
    assert cost == {"parameters": 4 * 27 + 8, "flops_per_patch": 2 * (4 * 4 * 8 * 8) * 27}
    assert not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
