"""Peak memory and model cost, for the logs and ``summary.json``."""

from __future__ import annotations

import copy
import resource
import sys

import torch


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on a GPU; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def model_cost(model: torch.nn.Module, patch_size: list[int], in_channels: int) -> dict:
    """Parameters and forward FLOPs of one patch, measured on a CPU copy (RNG left untouched)."""
    from hybrid_unet.models.report import forward_flops

    parameters = sum(p.numel() for p in model.parameters())
    rng = torch.get_rng_state()
    try:  # a copy: a training-mode forward moves batch-norm statistics
        flops = forward_flops(copy.deepcopy(model).cpu(), patch_size, in_channels)
    except Exception as exc:  # a model the FLOP counter cannot trace still gets a summary
        return {"parameters": parameters, "flops_error": str(exc)}
    finally:
        torch.set_rng_state(rng)
    return {"parameters": parameters, "flops_per_patch": flops}
