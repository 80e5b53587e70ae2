"""The hybrid encoder block: a conv path followed by pre-norm token mixing and an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybrid_unet.models.blocks.attention import (
    MultiHeadSelfAttention3d,
    ShuffleAttention3d,
    SqueezeExcitation3d,
)
from hybrid_unet.models.blocks.conv import ConvNormAct3d, MBConv3d, ResidualConvBlock3d
from hybrid_unet.models.blocks.layers import (
    ActFactory,
    DropPath,
    LayerNorm3d,
    NormFactory,
    lookup,
    triple,
)

CONV_KINDS = ("conv", "resconv", "mbconv")
ATTENTION_KINDS = ("mhsa", "identity", "se", "conv")
SHUFFLE_KINDS = ("shuffle", "identity", "se", "conv")


def make_conv_block(
    kind: str,
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    norm: NormFactory,
    act: ActFactory,
    drop_path: float = 0.0,
    expand_ratio: float = 4.0,
) -> nn.Module:
    """Build one conv block: ``conv`` (dense ConvNormAct), ``resconv`` or ``mbconv``."""
    kind = lookup(kind, CONV_KINDS, "conv block")
    if kind == "conv":
        return ConvNormAct3d(in_channels, out_channels, kernel_size, stride, norm, act)
    if kind == "resconv":
        return ResidualConvBlock3d(
            in_channels, out_channels, kernel_size, stride, norm, act, drop_path
        )
    return MBConv3d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        expand_ratio,
        norm,
        act,
        se_layer=SqueezeExcitation3d,
        drop_path=drop_path,
    )


def make_token_mixer(
    kind: str, dim: int, num_heads: int, window_size: int | Sequence[int] | None
) -> nn.Module | None:
    """The attention component of a hybrid block, or an ablation of it.

    ``mhsa``: multi-head self-attention; ``identity``: none (the branch is skipped);
    ``se``: squeeze-excitation; ``conv``: pointwise 2x expand, depthwise 3x3x3, pointwise
    project, about the qkv + projection compute of the attention.
    """
    kind = lookup(kind, ATTENTION_KINDS, "attention")
    if kind == "mhsa":
        return MultiHeadSelfAttention3d(dim, num_heads, window_size)
    if kind == "identity":
        return None
    if kind == "se":
        return SqueezeExcitation3d(dim)
    return nn.Sequential(
        nn.Conv3d(dim, 2 * dim, 1),
        nn.Conv3d(2 * dim, 2 * dim, 3, padding=1, groups=2 * dim),
        nn.GELU(),
        nn.Conv3d(2 * dim, dim, 1),
    )


class _GatedDepthwise(nn.Module):
    """``x * sigmoid(depthwise3x3x3(x))``: a conv ablation of shuffle attention."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


def make_skip_attention(kind: str, channels: int, groups: int = 4) -> nn.Module:
    """Attention on decoder features: ``shuffle``, ``identity``, ``se`` or ``conv`` (gated)."""
    kind = lookup(kind, SHUFFLE_KINDS, "shuffle_attention")
    if kind == "shuffle":
        while groups > 1 and channels % (2 * groups):
            groups //= 2
        return ShuffleAttention3d(channels, groups)
    if kind == "identity":
        return nn.Identity()
    if kind == "se":
        return SqueezeExcitation3d(channels)
    return _GatedDepthwise(channels)


class HybridEncoderBlock(nn.Module):
    """Conv block, then ``x + pos(x)``, ``x + attn(norm(x))``, ``x + mlp(norm(x))``.

    The position encoding is a depthwise 3x3x3 conv (conditional position encoding), so any
    input size works without interpolating tables.

    Args:
        in_channels: input channels C.
        out_channels: output channels; must be divisible by ``num_heads``.
        kernel_size: per-axis kernel of the conv path.
        stride: per-axis stride of the conv path.
        num_heads: attention heads.
        norm: norm factory for the conv path.
        act: activation factory for the conv path.
        conv: conv path kind, one of ``CONV_KINDS``.
        attention: token mixer kind, one of ``ATTENTION_KINDS``.
        window_size: None for global attention or the attention window.
        mlp_ratio: hidden width of the MLP relative to ``out_channels``.
        drop_path: stochastic depth of the residual branches.

    Shape: ``(B, C, D, H, W) -> (B, out_channels, D/sd, H/sh, W/sw)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        num_heads: int = 4,
        norm: NormFactory = nn.InstanceNorm3d,
        act: ActFactory = nn.GELU,
        conv: str = "mbconv",
        attention: str = "mhsa",
        window_size: int | Sequence[int] | None = None,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        kernel = triple(kernel_size, "kernel_size")
        self.conv = make_conv_block(
            conv, in_channels, out_channels, kernel, triple(stride, "stride"), norm, act, drop_path
        )
        self.pos_embed = nn.Conv3d(
            out_channels,
            out_channels,
            kernel,
            padding=tuple(k // 2 for k in kernel),
            groups=out_channels,
        )
        self.attn = make_token_mixer(attention, out_channels, num_heads, window_size)
        self.norm1 = LayerNorm3d(out_channels) if self.attn is not None else None
        hidden = max(1, round(out_channels * mlp_ratio))
        self.norm2 = LayerNorm3d(out_channels)
        self.mlp = nn.Sequential(
            nn.Conv3d(out_channels, hidden, 1), nn.GELU(), nn.Conv3d(hidden, out_channels, 1)
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x + self.pos_embed(x)
        if self.attn is not None:
            x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
