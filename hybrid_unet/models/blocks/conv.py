"""Convolution blocks for 3D volumes ``(B, C, D, H, W)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from hybrid_unet.models.blocks.depthwise import DepthwiseConv3d
from hybrid_unet.models.blocks.layers import ActFactory, DropPath, NormFactory, triple


def _same_padding(kernel: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(k // 2 for k in kernel)  # type: ignore[return-value]


def _zero_norm_scale(norm: nn.Module) -> None:
    weight = getattr(norm, "weight", None)
    if weight is None:
        raise ValueError(f"{type(norm).__name__} has no scale to zero (affine=False?)")
    nn.init.zeros_(weight)


class ConvNormAct3d(nn.Sequential):
    """Conv3d, normalisation, activation (activation optional).

    Args:
        in_channels: input channels C.
        out_channels: output channels.
        kernel_size: int or per-axis (D, H, W) kernel; odd sizes keep the shape.
        stride: int or per-axis stride.
        norm: factory ``norm(channels)``.
        act: factory ``act()``, or None for no activation.
        groups: conv groups (``in_channels`` for a depthwise conv).

    Shape: ``(B, C, D, H, W) -> (B, out_channels, D/sd, H/sh, W/sw)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        norm: NormFactory = nn.InstanceNorm3d,
        act: ActFactory | None = nn.LeakyReLU,
        groups: int = 1,
    ) -> None:
        kernel = triple(kernel_size, "kernel_size")
        conv: nn.Conv3d
        if groups > 1 and groups == in_channels == out_channels:
            conv = DepthwiseConv3d(in_channels, kernel, triple(stride, "stride"), bias=False)
        else:
            conv = nn.Conv3d(
                in_channels,
                out_channels,
                kernel,
                triple(stride, "stride"),
                padding=_same_padding(kernel),
                groups=groups,
                bias=False,
            )
        layers: list[nn.Module] = [conv, norm(out_channels)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class DepthwiseSeparableConv3d(nn.Sequential):
    """Depthwise kxk conv, then pointwise 1x1x1 conv, norm, activation.

    Shape: ``(B, C, D, H, W) -> (B, out_channels, D/sd, H/sh, W/sw)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        norm: NormFactory = nn.InstanceNorm3d,
        act: ActFactory | None = nn.LeakyReLU,
    ) -> None:
        kernel = triple(kernel_size, "kernel_size")
        layers: list[nn.Module] = [
            DepthwiseConv3d(in_channels, kernel, triple(stride, "stride"), bias=False),
            nn.Conv3d(in_channels, out_channels, 1, bias=False),
            norm(out_channels),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class MBConv3d(nn.Module):
    """Inverted residual: expand 1x1, depthwise kxk, squeeze-excitation, project 1x1.

    The residual (with stochastic depth) is used when stride is 1 and channels match.

    Args:
        in_channels: input channels C.
        out_channels: output channels.
        kernel_size: depthwise kernel, int or per axis.
        stride: stride of the depthwise conv, int or per axis.
        expand_ratio: hidden width = ``in_channels * expand_ratio``.
        norm: norm factory.
        act: activation factory.
        se_layer: factory ``se_layer(hidden_channels)`` for the excitation, or None.
        drop_path: stochastic-depth probability of the residual branch.

    Shape: ``(B, C, D, H, W) -> (B, out_channels, D/sd, H/sh, W/sw)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        expand_ratio: float = 4.0,
        norm: NormFactory = nn.InstanceNorm3d,
        act: ActFactory = nn.SiLU,
        se_layer: Callable[[int], nn.Module] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if expand_ratio < 1:
            raise ValueError(f"expand_ratio must be >= 1, got {expand_ratio}")
        hidden = max(1, round(in_channels * expand_ratio))
        stride3 = triple(stride, "stride")
        self.expand = ConvNormAct3d(in_channels, hidden, 1, 1, norm, act)
        self.depthwise = ConvNormAct3d(hidden, hidden, kernel_size, stride3, norm, act, hidden)
        self.se = se_layer(hidden) if se_layer is not None else nn.Identity()
        self.project = ConvNormAct3d(hidden, out_channels, 1, 1, norm, None)
        self.use_residual = stride3 == (1, 1, 1) and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.use_residual else nn.Identity()

    def zero_init_last(self) -> None:
        """Zero the projection's norm scale, so the block starts as the identity."""
        if self.use_residual:
            _zero_norm_scale(self.project[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + self.drop_path(y) if self.use_residual else y


class ResidualConvBlock3d(nn.Module):
    """Two dense kxk ConvNormAct with an identity (or 1x1 projected) shortcut.

    Shape: ``(B, C, D, H, W) -> (B, out_channels, D/sd, H/sh, W/sw)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        norm: NormFactory = nn.InstanceNorm3d,
        act: ActFactory = nn.LeakyReLU,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        stride3 = triple(stride, "stride")
        self.conv1 = ConvNormAct3d(in_channels, out_channels, kernel_size, stride3, norm, act)
        self.conv2 = ConvNormAct3d(out_channels, out_channels, kernel_size, 1, norm, None)
        if stride3 == (1, 1, 1) and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvNormAct3d(in_channels, out_channels, 1, stride3, norm, None)
        self.drop_path = DropPath(drop_path)
        self.act = act()

    def zero_init_last(self) -> None:
        """Zero the second conv's norm scale, so the block starts as its shortcut."""
        _zero_norm_scale(self.conv2[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.drop_path(self.conv2(self.conv1(x))))
