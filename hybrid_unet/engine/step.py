"""One optimisation step and the precision context around it."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager:
    """``torch.autocast`` for bf16/fp16, a no-op for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient norm."""


@dataclass
class StepResult:
    """What one step reports."""

    loss: float
    grad_norm: float
    skipped: bool


def train_step(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batches: list[dict[str, torch.Tensor]],
    precision: str,
    grad_clip: float | None,
) -> StepResult:
    """Forward and backward over ``batches`` (gradient accumulation), clip, finite check, step.

    Each batch's loss is divided by ``len(batches)``, so the step follows the mean gradient.
    A step whose loss or gradient norm is not finite changes no weights and reports
    ``skipped=True``; the scaler (fp16 only) handles its own overflow steps.
    """
    total = 0.0
    for batch in batches:
        with autocast_context(precision, batch["image"].device):
            output = model(batch["image"])
            loss = loss_fn(output, batch["label"]) / len(batches)
        scaler.scale(loss).backward()
        total += float(loss.detach())
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = grad_clip if grad_clip is not None else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    finite = math.isfinite(total) and bool(torch.isfinite(grad_norm))
    if finite or scaler.is_enabled():
        scaler.step(optimizer)  # with fp16 the scaler itself skips non-finite steps
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=total, grad_norm=float(grad_norm), skipped=not finite)
