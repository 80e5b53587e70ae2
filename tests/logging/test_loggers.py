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


def _wandb_history_steps(run_file) -> list[int]:
    """The ``_step`` of every history record in an offline ``run-*.wandb`` file (W&B's
    LevelDB-style log: 32 KiB blocks of records with a 7-byte header, after a 7-byte file
    header)."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, pending, steps = run_file.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4) and pending:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
                steps.append(json.loads(items["_step"]))
    return steps


@pytest.mark.slow
def test_wandb_offline_keeps_the_steps_of_a_hard_killed_run(tmp_path):
    """W&B writes its offline file every 15 s by default, and a step's row only once the next
    step is logged: a run SIGKILLed 3 s after logging two epochs left a 7-byte file (header
    only), and a resume could not bring those steps back."""
    import os
    import subprocess
    import sys

    pytest.importorskip("wandb")
    script = (
        "import os, signal, time\n"
        "from hybrid_unet.logging.wandb import WandbLogger\n"
        f"logger = WandbLogger(run_dir={str(tmp_path)!r})\n"
        "for step, loss in ((3, 1.0), (6, 0.5)):  # as the trainer logs an epoch\n"
        "    logger.log_scalars({'train_loss': loss}, step=step)\n"
        "    logger.log_images({}, step=step)\n"
        "time.sleep(3)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    assert _wandb_history_steps(run_file) == [3, 6]
