"""Helpers shared by the tests: config composition, a tiny training config, the CLI."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from hybrid_unet.config.schema import register_configs

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HYBRID_UNET_DATA", REPO.parent / "shared" / "data"))

register_configs()

# A run small enough for a unit test: 32^3 phantoms, a 4-stage network of 8..64 channels.
TINY = [
    "+preset=quick_test",
    "data.source.num_cases=8",
    "data.source.shape=[32,32,32]",
    "data.patch_size=[32,32,32]",
    "data.max_val_cases=2",
    "trainer.steps_per_epoch=3",
    "trainer.val_every=1",
    "trainer.progress=false",
    "trainer.num_threads=1",
    "scheduler.warmup_steps=2",
]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The composed config as ``python -m hybrid_unet.train <overrides>`` would see it."""
    with initialize_config_module(version_base="1.3", config_module="hybrid_unet.conf"):
        return compose(config_name="config", overrides=overrides or [])


def run_train(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the training CLI in a subprocess, as a user would."""
    env = {**os.environ, "HYBRID_UNET_RUNS": str(cwd / "runs"), "WANDB_MODE": "offline"}
    # This checkout's code, not whichever copy is pip-installed (cwd is a temporary dir).
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, "-m", "hybrid_unet.train", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def train_in_process(overrides: list[str], run_dir: Path):
    """Compose, check and train in this process; returns ``(summary, trainer)``."""
    from hybrid_unet.config.validate import check_config
    from hybrid_unet.engine.trainer import Trainer

    cfg = check_config(compose_config([*TINY, *overrides, f"paths.output_dir={run_dir}"]))
    trainer = Trainer(cfg, run_dir)
    return trainer.fit(), trainer


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def cli(args: list[str], cwd: Path) -> CliResult:
    """``python -m hybrid_unet.train ARGS`` in this process, with what it printed.

    An exception that the entry point lets through (a crash the user would see as a traceback)
    is returned as exit code 1 with the traceback in ``stderr``.
    """
    from hydra.core.global_hydra import GlobalHydra

    from hybrid_unet import train as entry

    env = dict(os.environ)
    argv = sys.argv
    os.environ.update({"HYBRID_UNET_RUNS": str(cwd / "runs"), "WANDB_MODE": "offline"})
    out, err = io.StringIO(), io.StringIO()
    code = 0
    GlobalHydra.instance().clear()
    try:
        sys.argv = ["hybrid_unet.train", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entry.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(env)
        GlobalHydra.instance().clear()
    return CliResult(code, out.getvalue(), err.getvalue())


def sigterm_after_step(monkeypatch, n: int) -> None:
    """This process receives SIGTERM right after training step ``n`` (from 1) returns;
    ``monkeypatch.undo()`` puts the real step back."""
    import signal

    from hybrid_unet.engine import trainer as trainer_module

    real_step = trainer_module.train_step
    calls = {"n": 0}

    def step_then_sigterm(*args, **kwargs):
        calls["n"] += 1
        result = real_step(*args, **kwargs)
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(trainer_module, "train_step", step_then_sigterm)
