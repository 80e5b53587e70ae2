"""A tiny run in the trainer's own checkpoint format, shared by the inference tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hybrid_unet.data.planning import Plan
from hybrid_unet.engine.checkpoint import atomic_save
from tests.helpers import TINY, compose_config

# A 4-stage HybridUNet of 4..32 channels: random weights are enough for geometry and parity.
TINY_NET = ["model.features=[4,8,16,32]", "model.dropout=0.2", "logger=[]"]


def make_run(run_dir: Path, seed: int = 0, overrides: list[str] = ()) -> Path:
    """Build a Trainer (phantom data, tiny network) and save its payload as ``best.pt``.

    ``overrides`` change the training config (e.g. the patch size or the number of stages).
    The payload gets a hippocampus-like plan (1 mm, z-score), so prediction crops, resamples
    and normalises new scans as a run trained on MSD Hippocampus would.
    """
    from hybrid_unet.config.validate import check_config
    from hybrid_unet.engine.trainer import Trainer

    cfg = check_config(compose_config([*TINY, *TINY_NET, *overrides, f"seed={seed}",
                                       f"paths.output_dir={run_dir}"]))  # fmt: skip
    trainer = Trainer(cfg, run_dir)
    payload = trainer.payload()
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    plan = Plan(spacing=[1.0, 1.0, 1.0], patch_size=[32, 32, 32], batch_size=2, strides=strides,
                kernel_sizes=[[3, 3, 3]] * 4, normalization=["zscore"],
                intensity_properties=[{}], in_channels=1)  # fmt: skip
    payload["plan"] = dataclasses.asdict(plan)
    trainer.logger.close()
    return atomic_save(payload, run_dir / "checkpoints" / "best.pt")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Run dir of a tiny randomly initialised network with a 1 mm plan."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    make_run(run_dir, seed=0)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run_b(tmp_path_factory) -> Path:
    """A second run (other seed) with the same plan: the other member of an ensemble."""
    run_dir = tmp_path_factory.mktemp("tiny_run_b")
    make_run(run_dir, seed=1)
    return run_dir


@pytest.fixture(scope="session")
def mirrored_run(tiny_run, tmp_path_factory) -> Path:
    """The tiny run as if it had trained with flips along H and W and validated over them."""
    from hybrid_unet.engine.checkpoint import load_checkpoint

    payload = load_checkpoint(tiny_run / "checkpoints" / "best.pt")
    payload["config"]["trainer"]["val_mirror"] = True
    payload["config"]["data"]["augmentation"] = {
        "_target_": "hybrid_unet.data.transforms.build_train_transform",
        "flip_axes": [1, 2],
    }
    run_dir = tmp_path_factory.mktemp("mirrored_run")
    atomic_save(payload, run_dir / "checkpoints" / "best.pt")
    return run_dir
