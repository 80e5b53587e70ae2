"""Nothing untrusted runs, nothing outside the dataset is read, no secret is written.

Each malicious file is first shown to work (an unsafe loader in a forked child creates the
marker file), then our loaders must refuse it with one clear error and no marker.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io import read_image
from hybrid_unet.engine.checkpoint import CheckpointError, load_checkpoint
from tests.helpers import TINY
from tests.reliability.harness import assert_one_error, cli, run_forked

pytestmark = pytest.mark.reliability


class _Touch:
    """Unpickling this object would create ``marker`` (by way of ``payload``)."""

    def __init__(self, marker: Path, payload: str) -> None:
        self.marker, self.payload = marker, payload

    def __reduce__(self):
        if self.payload == "os.system":
            return os.system, (f"touch {self.marker}",)
        if self.payload == "builtins.exec":
            return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)
        return Path.touch, (self.marker,)  # a method of an allowed-looking class


PAYLOADS = ["os.system", "builtins.exec", "pathlib.Path.touch"]


def _evil_checkpoint(tmp_path: Path, payload: str) -> tuple[Path, Path]:
    marker = tmp_path / f"pwned-{payload}"
    path = tmp_path / f"evil-{payload}.pt"
    good = {"model": torch.nn.Linear(2, 2).state_dict(), "state": {"step": 1}}
    torch.save({**good, "meta": _Touch(marker, payload)}, path)
    return path, marker


def _unsafe_load_creates(marker: Path, load, tmp_path: Path) -> None:
    """The payload works: an unsafe loader (in a throw-away child) creates the marker."""
    child = run_forked(load, tmp_path / "unsafe.log")
    assert child.exit_code == 0, child.output
    assert marker.exists(), "the crafted file is not actually malicious"
    marker.unlink()


@pytest.mark.row("security", "malicious pickle checkpoint (load, resume, pretrained)",
                 "refused by the safe loader with one error; the payload never runs")  # fmt: skip
@pytest.mark.parametrize("payload", PAYLOADS)
def test_malicious_checkpoint_is_refused(payload, tmp_path, observe):
    path, marker = _evil_checkpoint(tmp_path, payload)
    _unsafe_load_creates(marker, lambda: torch.load(path, weights_only=False), tmp_path)
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        load_checkpoint(path)
    keys = ("trainer.resume", "trainer.pretrained") if payload == PAYLOADS[0] else ()
    for key in keys:  # the entry point, for one payload (the loader is the same for all)
        result = cli([*TINY, f"{key}={path}"], tmp_path)
        assert_one_error(result, str(path), "refused by the safe loader")
    assert not marker.exists()
    observe(f"{payload}: refused by load_checkpoint" + ", trainer.resume, trainer.pretrained"
            * bool(keys), cases=1 + len(keys))  # fmt: skip


@pytest.mark.row("security", "malicious .npy (pickled object array) as an image",
                 "refused naming the file; the payload never runs")  # fmt: skip
def test_malicious_npy_is_refused(tmp_path, observe):
    marker = tmp_path / "pwned-npy"
    path = tmp_path / "scan.npy"
    np.save(path, np.array([_Touch(marker, "os.system")], dtype=object), allow_pickle=True)
    _unsafe_load_creates(marker, lambda: np.load(path, allow_pickle=True), tmp_path)
    with pytest.raises(DataError, match="allow_pickle=False") as info:
        read_image(path)
    assert str(path) in str(info.value) and not marker.exists()
    observe("object array refused by read_image (np.load without pickle)")


@pytest.mark.row("security", "malicious YAML in a run dir's .hydra/overrides.yaml",
                 "trainer.resume refuses it with one error; the payload never runs")  # fmt: skip
def test_malicious_overrides_yaml_is_refused(tmp_path, observe):
    marker = tmp_path / "pwned-yaml"
    run_dir = tmp_path / "runs" / "old"
    (run_dir / ".hydra").mkdir(parents=True)
    text = f"- trainer.max_epochs=1\n- !!python/object/apply:os.system ['touch {marker}']\n"
    (run_dir / ".hydra" / "overrides.yaml").write_text(text)
    _unsafe_load_creates(marker, lambda: yaml.unsafe_load(text), tmp_path)
    result = cli([f"trainer.resume={run_dir}"], tmp_path)
    assert_one_error(result, "overrides.yaml", "not a plain list of overrides")
    assert not marker.exists()
    observe("!!python/object/apply refused by yaml.safe_load, one error")


SECRETS = {
    "WANDB_API_KEY": "local-0123456789abcdef0123456789abcdef01234567",
    "HF_TOKEN": "hf_SECRETtokenVALUE42",
    "AWS_SECRET_ACCESS_KEY": "aws+SECRET/value/0042",
    "DB_PASSWORD": "hunter2-but-longer-0042",
}


@pytest.mark.slow
@pytest.mark.row("security", "secrets in the environment (W&B key, tokens, passwords)",
                 "no secret in any file of the run dir (config, logs, TensorBoard, W&B offline)")  # fmt: skip
def test_no_secret_reaches_the_run_dir(tmp_path, monkeypatch, observe):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_SILENT", "true")
    canary = str(tmp_path / "canary-data-dir")  # not secret: must show up in the config
    monkeypatch.setenv("HYBRID_UNET_DATA", canary)
    result = cli([*TINY, "trainer.max_epochs=1", "run_name=secret",
                  "logger=[csv,tensorboard,wandb]"], tmp_path)  # fmt: skip
    assert result.code == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "secret"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    seen = [p.name for p in files if canary.encode() in p.read_bytes()]
    assert "last.pt" in seen and any(n.endswith(".wandb") for n in seen), seen  # scan works
    assert any(p.name == "config.yaml" for p in files) and any("wandb" in str(p) for p in files)
    assert any("tfevents" in p.name for p in files) and (run_dir / "train.log").is_file()
    for path in files:
        data = path.read_bytes()
        for key, value in SECRETS.items():
            assert value.encode() not in data, f"{key} leaked into {path}"
    for stream in (result.stdout, result.stderr):
        assert not any(value in stream for value in SECRETS.values())
    observe(f"{len(SECRETS)} secrets set; {len(files)} files of the run dir and the console "
            "scanned: none found", cases=len(files))  # fmt: skip
