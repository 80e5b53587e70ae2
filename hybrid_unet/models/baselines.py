"""Honest baselines under the same contract as HybridUNet.

``PlainUNet`` (nnU-Net style) and ``ResEncUNet`` (residual encoder) are built here from the
shared layer library; ``SwinUNETRNet``, ``DynUNetNet`` and ``SegResNetNet`` are thin wrappers
around MONAI that add ``in_channels``, ``num_classes``, ``total_stride`` and the input check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DynUNet, SegResNet, SwinUNETR
from torch import nn

from hybrid_unet.models.blocks.conv import ConvNormAct3d, ResidualConvBlock3d
from hybrid_unet.models.blocks.layers import get_act, get_norm, triple
from hybrid_unet.models.unet_parts import (
    UNetDecoder,
    check_input,
    parse_topology,
    product_stride,
    run_encoder,
)


class PlainUNet(nn.Module):
    """nnU-Net-style U-Net: per stage ``n_conv_per_stage`` ConvNormAct (the first strided).

    Args:
        in_channels: input channels C.
        num_classes: output classes K.
        features: channels per stage, highest resolution first.
        strides: per stage, per-axis stride (stage 0 usually 1).
        kernel_sizes: per stage, per-axis odd kernel (default 3).
        n_conv_per_stage: convs per encoder stage (>= 1), or ``n_blocks_per_stage`` residual
            blocks for :class:`ResEncUNet`.
        decoder_convs: convs per decoder level.
        deep_supervision: return one logit map per decoder level while training.
        dropout: channel dropout after every encoder stage but the first.
        norm: "instance", "group" or "batch".
        act: "leakyrelu", "relu", "gelu" or "silu".
        activation_checkpointing: recompute encoder stages in backward.
        channels_last_3d: build the weights channels-last, so oneDNN runs the convolutions channels-last.

    Shape: as :class:`hybrid_unet.models.hybrid_unet.HybridUNet`.
    """

    residual = False

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        features: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2),
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        n_conv_per_stage: int | Sequence[int] = 2,
        decoder_convs: int = 2,
        deep_supervision: bool = True,
        dropout: float = 0.0,
        norm: str = "instance",
        act: str = "leakyrelu",
        activation_checkpointing: bool = False,
        channels_last_3d: bool = False,
    ) -> None:
        super().__init__()
        features, strides3, kernels3 = parse_topology(features, strides, kernel_sizes)
        n = len(features)
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}"
            )
        per_stage = (
            [n_conv_per_stage] * n if isinstance(n_conv_per_stage, int) else n_conv_per_stage
        )
        if len(per_stage) != n or any(int(c) < 1 for c in per_stage):
            raise ValueError(f"n_conv_per_stage must be >= 1 per stage, got {n_conv_per_stage}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        norm_t, act_t = get_norm(norm), get_act(act)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.deep_supervision = deep_supervision
        self.activation_checkpointing = activation_checkpointing
        self.channels_last_3d = channels_last_3d
        self.total_stride = product_stride(strides3)
        self.stages = nn.ModuleList()
        prev = in_channels
        for i, f in enumerate(features):
            k, s, c = kernels3[i], strides3[i], int(per_stage[i])
            if self.residual:
                layers: list[nn.Module] = (
                    [ConvNormAct3d(prev, f, k, s, norm_t, act_t)] if i == 0 else []
                )
                layers += [
                    ResidualConvBlock3d(
                        prev if (j == 0 and i > 0) else f,
                        f,
                        k,
                        s if (j == 0 and i > 0) else 1,
                        norm_t,
                        act_t,
                    )
                    for j in range(c)
                ]
            else:
                layers = [ConvNormAct3d(prev, f, k, s, norm_t, act_t)]
                layers += [ConvNormAct3d(f, f, k, 1, norm_t, act_t) for _ in range(c - 1)]
            if dropout > 0 and i > 0:
                layers.append(nn.Dropout3d(dropout))
            self.stages.append(nn.Sequential(*layers))
            prev = f
        self.decoder = UNetDecoder(
            features, strides3, kernels3, num_classes, norm_t, act_t, decoder_convs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input(x, self.in_channels, self.total_stride)
        skips = run_encoder(self.stages, x, self.activation_checkpointing and self.training)
        all_levels = self.training and self.deep_supervision
        outputs = self.decoder(skips, all_levels)
        return outputs if all_levels else outputs[0]


class ResEncUNet(PlainUNet):
    """nnU-Net ResEnc-style U-Net: residual blocks in the encoder, plain decoder.

    ``n_conv_per_stage`` counts residual blocks (two convs each); the first block of each
    stage after the stem downsamples. Arguments as :class:`PlainUNet`.
    """

    residual = True


class _MonaiWrapper(nn.Module):
    """Adds the package contract (``total_stride``, input check) around a MONAI network."""

    net: nn.Module

    def __init__(self, in_channels: int, num_classes: int, total_stride: Sequence[int]) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}"
            )
        self.in_channels, self.num_classes = in_channels, num_classes
        self.total_stride = triple(tuple(total_stride), "total_stride")
        self.channels_last_3d = False

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input(x, self.in_channels, self.total_stride)
        return self.net(x)


class SwinUNETRNet(_MonaiWrapper):
    """MONAI SwinUNETR; single output tensor.

    SwinUNETR needs every axis divisible by 32 and, with instance norm, at least 64. With
    ``pad_input`` the wrapper zero-pads any input up to that and crops the logits back, so it
    trains at any patch size (at the padded size's cost); without it inputs must fit.

    Args:
        in_channels: input channels C.
        num_classes: K.
        feature_size: embedding width (multiple of 12).
        use_v2: SwinUNETR-v2 residual conv blocks.
        activation_checkpointing: MONAI's ``use_checkpoint``.
        pad_input: pad inputs to a multiple of 32 (at least 64) instead of refusing them.
        **kwargs: other ``monai.networks.nets.SwinUNETR`` arguments (checked by MONAI).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        feature_size: int = 24,
        use_v2: bool = False,
        activation_checkpointing: bool = False,
        pad_input: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(in_channels, num_classes, (1, 1, 1) if pad_input else (32, 32, 32))
        self.pad_input = pad_input
        if feature_size < 12 or feature_size % 12:
            raise ValueError(f"feature_size must be a positive multiple of 12, got {feature_size}")
        self.net = SwinUNETR(
            in_channels=in_channels,
            out_channels=num_classes,
            feature_size=feature_size,
            use_v2=use_v2,
            use_checkpoint=activation_checkpointing,
            **kwargs,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pad_input:
            return super().forward(x)
        size = x.shape[2:]
        target = [max(64, -(-s // 32) * 32) for s in size]
        pad = [p for s, t in zip(reversed(size), reversed(target), strict=True) for p in (0, t - s)]
        out = self.net(nn.functional.pad(x, pad))
        return out[:, :, : size[0], : size[1], : size[2]]


class DynUNetNet(_MonaiWrapper):
    """MONAI DynUNet; with deep supervision returns its heads at their native resolutions.

    Args:
        in_channels: input channels C.
        num_classes: K.
        features: channels per stage.
        strides: per stage, per-axis stride (stage 0 is the input block).
        kernel_sizes: per stage, per-axis kernel (default 3).
        deep_supervision: a list of logits highest resolution first while training.
        res_block: residual conv blocks.
        dropout: dropout probability or None.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        features: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2),
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        deep_supervision: bool = True,
        res_block: bool = False,
        dropout: float | None = None,
    ) -> None:
        features, strides3, kernels3 = parse_topology(features, strides, kernel_sizes)
        super().__init__(in_channels, num_classes, product_stride(strides3))
        self.deep_supervision = deep_supervision and len(features) > 2
        self.net = DynUNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=num_classes,
            kernel_size=kernels3,
            strides=strides3,
            upsample_kernel_size=strides3[1:],
            filters=features,
            dropout=dropout,
            deep_supervision=self.deep_supervision,
            deep_supr_num=max(1, len(features) - 2),
            res_block=res_block,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input(x, self.in_channels, self.total_stride)
        # DynUNet.forward interpolates its heads to full size and stacks them; the loss wants
        # them at their own scale, and MONAI keeps them in ``heads`` (level 1, 2, ...).
        out = self.net.output_block(self.net.skip_layers(x))
        if self.training and self.deep_supervision:
            return [out, *self.net.heads]
        return out


class SegResNetNet(_MonaiWrapper):
    """MONAI SegResNet; single output tensor, total stride ``2 ** (len(blocks_down) - 1)``.

    Args:
        in_channels: input channels C.
        num_classes: K.
        init_filters: width of the first stage.
        blocks_down: residual blocks per encoder stage.
        blocks_up: residual blocks per decoder stage.
        dropout: dropout probability or None.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        init_filters: int = 16,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] = (1, 1, 1),
        dropout: float | None = None,
    ) -> None:
        if len(blocks_up) != len(blocks_down) - 1:
            raise ValueError(
                f"blocks_up needs len(blocks_down) - 1 entries, got {list(blocks_up)} for "
                f"{list(blocks_down)}"
            )
        s = 2 ** (len(blocks_down) - 1)
        super().__init__(in_channels, num_classes, (s, s, s))
        self.net = SegResNet(
            spatial_dims=3,
            init_filters=init_filters,
            in_channels=in_channels,
            out_channels=num_classes,
            dropout_prob=dropout,
            blocks_down=tuple(blocks_down),
            blocks_up=tuple(blocks_up),
        )
