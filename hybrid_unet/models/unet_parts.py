"""Pieces shared by every U-Net in this package: topology checks, input checks, the decoder."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hybrid_unet.models.blocks.conv import ConvNormAct3d
from hybrid_unet.models.blocks.layers import ActFactory, NormFactory, triple

Triple = tuple[int, int, int]


def parse_topology(
    features: Sequence[int],
    strides: Sequence[int | Sequence[int]],
    kernel_sizes: Sequence[int | Sequence[int]] | None = None,
) -> tuple[list[int], list[Triple], list[Triple]]:
    """Validate per-stage widths, strides and kernels; return them as lists of tuples.

    Raises:
        ValueError: naming the first bad value.
    """
    features = [int(f) for f in features]
    if len(features) < 2:
        raise ValueError(f"features needs at least 2 stages, got {features}")
    if any(f < 1 for f in features):
        raise ValueError(f"features must be positive, got {features}")
    if len(strides) != len(features):
        raise ValueError(
            f"strides has {len(strides)} stages but features has {len(features)}: {list(strides)}"
        )
    strides3 = [triple(s, f"strides[{i}]") for i, s in enumerate(strides)]
    if kernel_sizes is None:
        kernel_sizes = [3] * len(features)
    if len(kernel_sizes) != len(features):
        raise ValueError(
            f"kernel_sizes has {len(kernel_sizes)} stages but features has {len(features)}"
        )
    kernels3 = [triple(k, f"kernel_sizes[{i}]") for i, k in enumerate(kernel_sizes)]
    for i, k in enumerate(kernels3):
        if any(v % 2 == 0 for v in k):
            raise ValueError(f"kernel_sizes[{i}] must be odd per axis, got {k}")
    return features, strides3, kernels3


def product_stride(strides: Sequence[Triple]) -> Triple:
    """Per-axis product of the stage strides: inputs must be divisible by it."""
    return tuple(math.prod(s[a] for s in strides) for a in range(3))  # type: ignore[return-value]


def check_input(x: torch.Tensor, in_channels: int, total_stride: Triple) -> None:
    """Raise ValueError unless ``x`` is ``(B, in_channels, D, H, W)`` divisible by the stride.

    Skipped while tracing or compiling, so the model exports and compiles without guards.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise ValueError(f"expected input (B, {in_channels}, D, H, W), got shape {tuple(x.shape)}")
    bad = [
        f"{axis}={n}" for axis, n, s in zip("DHW", x.shape[2:], total_stride, strict=True) if n % s
    ]
    if bad:
        raise ValueError(
            f"input spatial size {tuple(x.shape[2:])} is not divisible by the network's "
            f"total stride {total_stride} (bad axes: {', '.join(bad)})"
        )


def run_encoder(
    stages: Sequence[nn.Module], x: torch.Tensor, activation_checkpointing: bool
) -> list[torch.Tensor]:
    """Run the encoder stages, returning every stage's output (the skips), highest first.

    With ``activation_checkpointing`` each stage is recomputed in backward instead of keeping
    its activations (only while gradients are being recorded).
    """
    skips = []
    for stage in stages:
        if activation_checkpointing and torch.is_grad_enabled():
            x = checkpoint(stage, x, use_reentrant=False)
        else:
            x = stage(x)
        skips.append(x)
    return skips


class UNetDecoder(nn.Module):
    """Transposed-conv upsampling, skip concatenation, convs and 1x1x1 segmentation heads.

    Args:
        features: encoder widths, highest resolution first.
        strides: per-stage per-axis strides (stage 0 is the stem).
        kernel_sizes: per-stage per-axis kernels.
        num_classes: K.
        norm: norm factory.
        act: activation factory.
        convs_per_level: ConvNormAct layers after each skip fusion (>= 1).
        skip_attention: optional factory ``f(channels)`` applied after each fusion.

    ``forward(skips)`` takes the encoder outputs, highest resolution first (the last one is
    the bottleneck), and returns logits ``[(B, K, D, H, W), (B, K, D/s1, ...), ...]``, one per
    decoder level; with ``all_levels=False`` only the first.
    """

    def __init__(
        self,
        features: Sequence[int],
        strides: Sequence[Triple],
        kernel_sizes: Sequence[Triple],
        num_classes: int,
        norm: NormFactory,
        act: ActFactory,
        convs_per_level: int = 2,
        skip_attention: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if convs_per_level < 1:
            raise ValueError(f"decoder convs per level must be >= 1, got {convs_per_level}")
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.heads = nn.ModuleList()
        for i in range(len(features) - 1):
            f, s = features[i], strides[i + 1]
            self.ups.append(nn.ConvTranspose3d(features[i + 1], f, s, s, bias=False))
            layers: list[nn.Module] = [ConvNormAct3d(2 * f, f, kernel_sizes[i], 1, norm, act)]
            layers += [
                ConvNormAct3d(f, f, kernel_sizes[i], 1, norm, act)
                for _ in range(convs_per_level - 1)
            ]
            if skip_attention is not None:
                layers.append(skip_attention(f))
            self.blocks.append(nn.Sequential(*layers))
            self.heads.append(nn.Conv3d(f, num_classes, 1))

    def forward(self, skips: Sequence[torch.Tensor], all_levels: bool) -> list[torch.Tensor]:
        x = skips[-1]
        outputs: list[torch.Tensor] = []
        for i in reversed(range(len(self.blocks))):
            x = self.blocks[i](torch.cat([self.ups[i](x), skips[i]], dim=1))
            if all_levels or i == 0:
                outputs.append(self.heads[i](x))
        return outputs[::-1]
