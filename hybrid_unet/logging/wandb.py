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
        )  # fmt: skip
        self.run_id = run_id

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        import wandb

        self.run.log({k: wandb.Image(v) for k, v in images.items()}, step=step)

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def close(self) -> None:
        self.run.finish()
