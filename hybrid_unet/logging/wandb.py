"""Weights & Biases: one W&B run per training run, continued across resumes."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import numpy as np

_ID_FILE = "wandb_run_id"


class WandbLogger:
    """Scalars and images to W&B, always at ``step=global_step``.

    The run id is kept in ``<run_dir>/wandb_run_id`` and in the checkpoint, and a resumed run
    calls ``wandb.init(id=..., resume="allow")``: the curves continue in the same W&B run.
    Offline (``WANDB_MODE=offline`` or ``mode: offline``) it writes ``<run_dir>/wandb/``.

    Args:
        run_dir: This run's dir.
        resume_step: The step a resumed run continues from (``None``: a new run).
        state: What :meth:`state_dict` returned before (the run id).
        config: The resolved config, logged as the run's config.
        project: W&B project.
        entity: W&B team or user (``None``: the default).
        mode: ``online``, ``offline`` or ``disabled`` (``None``: ``WANDB_MODE`` or online).
        tags: Tags of the run.
        flush_interval_s: Seconds between writes of the logged data to the run's ``.wandb``
            file (W&B's own default, 15 s, lost every step of a run hard-killed within 15 s
            of logging them; ``None`` keeps W&B's default).
    """

    def __init__(
        self,
        run_dir: str,
        resume_step: int | None = None,
        state: dict | None = None,
        config: dict | None = None,
        project: str = "hybrid_unet",
        entity: str | None = None,
        mode: str | None = None,
        tags: list[str] | None = None,
        flush_interval_s: float | None = 1.0,
    ) -> None:
        import wandb

        id_file = Path(run_dir) / _ID_FILE
        run_id = (state or {}).get("run_id")
        if run_id is None and id_file.exists():
            run_id = id_file.read_text().strip()
        run_id = run_id or secrets.token_hex(4)  # W&B's own ids are 8 characters too
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=project, entity=entity, id=run_id, resume="allow", dir=run_dir,
            config=config, mode=mode, tags=tags, name=Path(run_dir).name,
            settings=_settings(wandb, flush_interval_s),
        )  # fmt: skip
        self.run_id = run_id

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        import wandb

        # The trainer logs a step's images right after its scalars: committing here writes the
        # step's row now, not when the next step is logged (a hard kill lost it until then).
        self.run.log({k: wandb.Image(v) for k, v in images.items()}, step=step, commit=True)

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def close(self) -> None:
        self.run.finish()


def _settings(wandb, flush_interval_s: float | None):
    """W&B settings with the ``.wandb`` file's flush interval, where this W&B version has one
    (a private setting: older versions write without it)."""
    fields = getattr(wandb.Settings, "model_fields", {})
    if flush_interval_s is None or "x_transaction_log_flush_interval" not in fields:
        return None
    return wandb.Settings(x_transaction_log_flush_interval=flush_interval_s)
