"""Fine-tuning a quick_test checkpoint onto a dataset with another class count."""

from __future__ import annotations

import pytest
import torch

from hybrid_unet.config.errors import ConfigError
from hybrid_unet.engine.build import encoder_parameters
from hybrid_unet.engine.checkpoint import load_checkpoint
from tests.helpers import train_in_process

ONE = ["trainer.steps_per_epoch=1", "data.max_val_cases=1"]


def test_fine_tune_to_three_classes_with_a_frozen_encoder(tmp_path, capsys):
    train_in_process([*ONE, "trainer.max_epochs=1"], tmp_path / "pre")  # 4 classes
    pretrained = tmp_path / "pre" / "checkpoints" / "last.pt"
    train_in_process([*ONE, f"trainer.pretrained={pretrained}", "data.num_classes=3",
                      "trainer.freeze_encoder_epochs=1", "trainer.max_epochs=2"],
                     tmp_path / "ft")  # fmt: skip
    err = capsys.readouterr().err
    assert f"Pretrained weights from {pretrained}" in err
    head_lines = [line for line in err.splitlines() if "skipped" in line and "shape" in line]
    assert head_lines and all("decoder" in line for line in head_lines)

    before = load_checkpoint(pretrained)["model"]
    epoch1 = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last-prev.pt")["model"]
    epoch2 = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")["model"]
    encoder = [k for k in before if not k.startswith("decoder.") and k in epoch1]
    assert encoder
    for name in encoder:  # frozen during epoch 1
        torch.testing.assert_close(epoch1[name], before[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(epoch2[k], before[k]) for k in encoder)  # trained in epoch 2
    decoder = [k for k in epoch1 if k.startswith("decoder.") and k in before
               and epoch1[k].shape == before[k].shape and epoch1[k].is_floating_point()]  # fmt: skip
    assert any(not torch.equal(epoch1[k], before[k]) for k in decoder)

    # A resume restores its own weights: the pretrained file may be gone (it had to exist,
    # and its weights were loaded, then overwritten).
    pretrained.unlink()
    summary, _ = train_in_process([*ONE, f"trainer.pretrained={pretrained}", "data.num_classes=3",
                                   "trainer.freeze_encoder_epochs=1", "trainer.max_epochs=3",
                                   f"trainer.resume={tmp_path / 'ft'}"], tmp_path / "ft")  # fmt: skip
    assert summary["epochs"] == 3 and "Pretrained weights" not in capsys.readouterr().err


def test_freezing_needs_an_encoder_decoder_split():
    with pytest.raises(ConfigError, match="freeze_encoder_epochs"):
        encoder_parameters(torch.nn.Linear(2, 2))


def test_a_checkpoint_with_a_weight_average_gives_the_average(tmp_path):
    """The EMA weights are what the run validated and predict uses; fine-tuning starts there."""
    from hybrid_unet.engine.build import instantiate_model, load_pretrained

    train_in_process([*ONE, "trainer.max_epochs=2", "trainer.ema_decay=0.5"], tmp_path)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["ema"] is not None
    model = instantiate_model(ckpt["config"]["model"])
    load_pretrained(model, str(tmp_path / "checkpoints" / "last.pt"))
    own = model.state_dict()
    differs = [k for k in ckpt["ema"] if not torch.equal(ckpt["ema"][k], ckpt["model"][k])]
    assert differs  # the average is not the raw weights
    for name in differs:
        torch.testing.assert_close(own[name], ckpt["ema"][name], rtol=0, atol=0, msg=name)


def test_a_run_dir_as_pretrained_gives_its_best_checkpoint(tmp_path, capsys):
    """predict and export take a run dir; trainer.pretrained said "checkpoint not found"."""
    train_in_process([*ONE, "trainer.max_epochs=1"], tmp_path / "pre")
    train_in_process([*ONE, "trainer.max_epochs=1", f"trainer.pretrained={tmp_path / 'pre'}"],
                     tmp_path / "ft")  # fmt: skip
    best = tmp_path / "pre" / "checkpoints" / "best.pt"
    assert f"Pretrained weights from {best}" in capsys.readouterr().err
