"""Model report: parameters per stage, FLOPs per patch, activation memory of a training step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def model_config(name: str, **fields) -> dict:
    """The ``model=<name>`` option as the train command composes it (its ``defaults:`` list
    applied, interpolations resolved), with ``fields`` (``in_channels``, ...) set. Keys left
    ``null`` for the plan to fill (``strides``, ...) are dropped: the class defaults apply."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from hybrid_unet.config.schema import register_configs

    register_configs()
    with initialize_config_module(version_base="1.3", config_module="hybrid_unet.conf"):
        cfg = compose(config_name="config", overrides=[f"model={name}", "paths.output_dir=."])
    node = OmegaConf.to_container(cfg.model, resolve=True)
    return {**{k: v for k, v in node.items() if v is not None}, **fields}


def _top_level_params(model: nn.Module) -> dict[str, int]:
    rows: dict[str, int] = {}
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            for i, sub in enumerate(child):
                rows[f"{name}.{i}"] = sum(p.numel() for p in sub.parameters())
        elif name == "decoder":
            for sub_name, sub in child.named_children():
                rows[f"decoder.{sub_name}"] = sum(p.numel() for p in sub.parameters())
        else:
            rows[name] = sum(p.numel() for p in child.parameters())
    return rows


def _sum_outputs(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float().sum()
    return sum(o.float().sum() for o in out)  # type: ignore[return-value]


def forward_flops(
    model: nn.Module,
    patch_size: Sequence[int],
    in_channels: int | None = None,
    dtype: torch.dtype | None = None,
) -> int:
    """Forward FLOPs of one ``(1, C, *patch_size)`` patch in training mode (deep-supervision
    heads included), counted by torch's ``FlopCounterMode``; leaves the mode as it was."""
    in_channels = in_channels if in_channels is not None else model.in_channels
    was_training = model.training
    model.train()
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)
    with torch.no_grad(), autocast, FlopCounterMode(display=False) as counter:
        model(torch.randn(1, in_channels, *patch_size))
    model.train(was_training)
    return counter.get_total_flops()


def model_report(
    model: nn.Module,
    patch_size: Sequence[int],
    batch_size: int = 1,
    in_channels: int | None = None,
    dtype: torch.dtype | None = None,
) -> dict:
    """Measure a model at one patch size.

    Args:
        model: any model of this package (``(B, C, D, H, W)`` in).
        patch_size: (D, H, W).
        batch_size: B for the activation-memory step.
        in_channels: C (default ``model.in_channels``).
        dtype: autocast dtype (e.g. ``torch.bfloat16``) or None for fp32.

    Returns:
        dict with ``params`` (total), ``params_per_stage`` (name -> count), ``flops_per_patch``
        (forward FLOPs of one patch, training mode), and ``activation_bytes`` (bytes of the
        distinct tensors autograd saves for backward in one training forward of the batch).
    """
    in_channels = in_channels if in_channels is not None else model.in_channels
    was_training = model.training
    flops = forward_flops(model, patch_size, in_channels, dtype)
    model.train()
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)

    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        seen[key] = key[1]
        return t

    xb = torch.randn(batch_size, in_channels, *patch_size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        loss = _sum_outputs(model(xb))
    loss.backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "params_per_stage": _top_level_params(model),
        "flops_per_patch": flops,
        "activation_bytes": sum(seen.values()),
        "patch_size": tuple(patch_size),
        "batch_size": batch_size,
    }


def format_report(report: dict) -> str:
    """Render :func:`model_report`'s dict as a small text table."""
    lines = [f"{'part':<20}{'params':>12}"]
    lines += [f"{k:<20}{v:>12,}" for k, v in report["params_per_stage"].items()]
    lines.append(f"{'total':<20}{report['params']:>12,}")
    lines.append(
        f"GFLOPs per patch {report['patch_size']}: {report['flops_per_patch'] / 1e9:.2f}; "
        f"saved activations at batch {report['batch_size']}: "
        f"{report['activation_bytes'] / 2**20:.0f} MiB"
    )
    return "\n".join(lines)
