"""TensorBoard event files in ``<run_dir>/tensorboard``."""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml


class TensorBoardLogger:
    """Scalars and images through ``SummaryWriter``.

    On resume ``purge_step`` drops events past the resume point, so the timeline stays single.
    """

    def __init__(
        self, run_dir: str, resume_step: int | None = None, state: dict | None = None,
        config: dict | None = None, subdir: str = "tensorboard",
    ) -> None:  # fmt: skip
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(log_dir=f"{run_dir}/{subdir}", purge_step=purge)
        if config is not None and resume_step is None:
            text = yaml.safe_dump(config, sort_keys=False)
            self.writer.add_text("config", f"```\n{text}\n```", 0)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for key, image in images.items():
            self.writer.add_image(key, image, step, dataformats="HWC")
        self.writer.flush()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.writer.close()
