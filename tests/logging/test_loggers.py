"""CSV, TensorBoard and W&B together; a resumed run continues one timeline and one W&B run."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from hybrid_unet.engine.checkpoint import load_checkpoint
from hybrid_unet.logging.csv import CSVLogger
from hybrid_unet.logging.panels import slice_panel
from tests.helpers import train_in_process

THREE = ["logger=[tensorboard,wandb,csv]", "trainer.steps_per_epoch=2", "data.max_val_cases=1"]


@pytest.mark.slow
def test_three_loggers_and_a_resume_keep_one_timeline_and_one_wandb_run(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train_in_process([*THREE, "trainer.max_epochs=2"], tmp_path)
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["logger"]["wandb"] == {
        "run_id": run_id
    }
    # Resume from epoch 1 (last.pt made unreadable): epoch 2 is logged a second time.
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    train_in_process([*THREE, "trainer.max_epochs=3", "trainer.resume=auto"], tmp_path)

    runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(f"-{run_id}") for name in runs)
    assert (tmp_path / "wandb_run_id").read_text().strip() == run_id
    with open(tmp_path / "metrics.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["2", "4", "6"]
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert [e.step for e in events.Scalars("train_loss")] == [2, 4, 6]  # no duplicate step 4
    assert {"lr", "grad_norm", "system/peak_memory_mb", "dice_1", "mean_dice"} <= set(
        tags["scalars"]
    )
    image_tags = [t for t in tags["images"] if t.startswith("val/")]
    assert len(image_tags) == 1
    assert [e.step for e in events.Images(image_tags[0])] == [2, 4, 6]
    assert "config/text_summary" in tags["tensors"]


def test_slice_panel_shows_image_label_and_prediction_side_by_side():
    image = np.random.default_rng(0).normal(size=(1, 8, 6, 5)).astype(np.float32)
    label = np.zeros((8, 6, 5), dtype=np.int64)
    label[5, 2:4, 1:3] = 1
    prediction = np.zeros_like(label)
    prediction[5, 0, 0] = 2
    panel = slice_panel(image, label, prediction)
    assert panel.shape == (6, 15, 3) and panel.dtype == np.uint8
    gray, lab, pred = panel[:, :5], panel[:, 5:10], panel[:, 10:]
    assert (gray[..., 0] == gray[..., 1]).all()  # no overlay on the plain image
    assert not (lab[2, 1] == gray[2, 1]).all() and (pred[2, 1] == gray[2, 1]).all()
    assert not (pred[0, 0] == lab[0, 0]).all()  # slice 5 is shown: the prediction's voxel


def test_csv_leaves_system_metrics_to_the_other_loggers(tmp_path):
    logger = CSVLogger(str(tmp_path))
    logger.log_scalars({"train_loss": 1.0, "system/peak_memory_mb": 123.0}, step=3)
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "step,train_loss"
