"""One optimisation step and the precision context around it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager:
    """``torch.autocast`` for bf16/fp16, a no-op for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


def _autocast_nesting() -> int:
    """How many ``torch.autocast`` contexts torch counts as open (it has no getter)."""
    level = torch.autocast_increment_nesting() - 1
    torch.autocast_decrement_nesting()
    return level


@contextmanager
def autocast_state_kept(device_type: str) -> Iterator[None]:
    """Leave torch's autocast state (enabled, dtype, cache, nesting) as it was found.

    A DataLoader reports a dead worker from its SIGCHLD handler, that is in the middle of
    whatever line the main thread runs. Landing inside ``torch.autocast.__enter__`` after the
    nesting level went up, the exception skips ``__exit__``: the level never returns to 0, the
    cache of cast weights is never cleared, and every later mixed-precision run in the process
    (the next jobs of an in-process sweep) computes with the weights of its first step.
    """
    enabled, dtype = torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    cache_enabled, nesting = torch.is_autocast_cache_enabled(), _autocast_nesting()
    try:
        yield
    finally:
        level = _autocast_nesting()
        while level > nesting:
            level = torch.autocast_decrement_nesting()
        while level < nesting:
            level = torch.autocast_increment_nesting()
        if level == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled(device_type, enabled)
        torch.set_autocast_dtype(device_type, dtype)
        torch.set_autocast_cache_enabled(cache_enabled)


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient norm."""


@dataclass
class StepResult:
    """What one step reports."""

    loss: float
    grad_norm: float
    skipped: bool  # a non-finite loss or gradient: no weight changed
    overflow: bool = False  # the fp16 scaler skipped the step and lowered its scale


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
    ``skipped=True``. With the fp16 scaler, a finite loss whose scaled gradient overflowed is
    the scaler's own routine (it skips the step and lowers its scale): ``overflow=True``, not
    counted as skipped, so it never adds up to a divergence.
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
    overflow = scaler.is_enabled() and math.isfinite(total) and not finite
    return StepResult(total, float(grad_norm), skipped=not finite and not overflow,
                      overflow=overflow)  # fmt: skip
