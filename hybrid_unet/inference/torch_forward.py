"""A PyTorch network as the NumPy sliding window calls it (validation and ``predict``)."""

from __future__ import annotations

import numpy as np
import torch

from hybrid_unet.engine.step import autocast_context
from hybrid_unet.inference.sliding_window import Forward


def torch_forward(model: torch.nn.Module, device: torch.device, precision: str = "fp32") -> Forward:
    """Windows ``(N, C, d, h, w)`` float32 -> logits ``(N, K, d, h, w)`` float32, without
    gradients, under ``precision`` autocast, for :class:`SlidingWindow`."""

    @torch.no_grad()
    def forward(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device)
        with autocast_context(precision, device):
            logits = model(x)
        return logits.float().cpu().numpy()

    return forward
