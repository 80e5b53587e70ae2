"""HybridUNet: a conv U-Net whose low-resolution encoder stages add self-attention."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from hybrid_unet.models.blocks.attention import MultiHeadSelfAttention3d
from hybrid_unet.models.blocks.conv import ConvNormAct3d
from hybrid_unet.models.blocks.hybrid import (
    HybridEncoderBlock,
    conv_block_factory,
    make_skip_attention,
    token_mixer_factory,
)
from hybrid_unet.models.blocks.layers import get_act, get_norm
from hybrid_unet.models.unet_parts import (
    UNetDecoder,
    check_input,
    parse_topology,
    product_stride,
    run_encoder,
)


class HybridUNet(nn.Module):
    """U-Net with per-stage conv kinds and multi-head self-attention in chosen stages.

    Each encoder stage is a strided dense ConvNormAct (the stem for stage 0) followed by
    ``depths[i]`` blocks of kind ``stage_blocks[i]`` (dense ``conv``, ``resconv`` or
    ``mbconv``); stages in ``attention_stages`` use :class:`HybridEncoderBlock` instead
    (conv path, then attention and MLP). The decoder upsamples with transposed convs, fuses
    skips by concatenation, applies ``shuffle_attention`` and has a 1x1x1 head per level.

    Args:
        in_channels: input channels C.
        num_classes: output classes K (background included).
        features: channels per stage, highest resolution first.
        strides: per stage, per-axis (D, H, W) stride; stage 0 is the stem.
        depths: blocks per encoder stage (>= 0 each).
        attention_stages: 0-based stages whose blocks add self-attention.
        num_heads: attention heads (must divide the width of every attention stage).
        deep_supervision: return one logit map per decoder level while training.
        dropout: channel dropout after every encoder stage but the first.
        drop_path: maximum stochastic depth, increasing linearly over the encoder blocks.
        kernel_sizes: per stage, per-axis odd kernel (default 3); e.g. (1, 3, 3).
        stage_blocks: conv kind per stage (default: dense ``conv`` everywhere but the
            attention stages, which use ``mbconv``).
        norm: "instance", "group" or "batch".
        act: "leakyrelu", "relu", "gelu" or "silu".
        attention: token mixer in attention stages: "mhsa", "identity", "se" or "conv".
        shuffle_attention: decoder attention: "shuffle", "identity", "se" or "conv".
        mbconv_se: squeeze-excitation inside MBConv blocks (False: ablation without it).
        expand_ratio: MBConv hidden width relative to the stage width.
        window_size: None for global attention, else an attention window (int or 3 ints).
        mlp_ratio: MLP width of hybrid blocks relative to the stage width.
        decoder_convs: ConvNormAct layers per decoder level.
        zero_init_residual: start every residual block (MBConv, residual conv, hybrid block)
            as the identity by zeroing the last layer of its branches.
        activation_checkpointing: recompute encoder stages in backward to save memory.
        channels_last_3d: build the weights channels-last, so oneDNN runs the convolutions
            channels-last (``engine.build.instantiate_model``); either memory format works.

    Shape: ``(B, C, D, H, W) -> (B, K, D, H, W)`` or, in training with deep supervision,
    a list ``[(B, K, D, H, W), (B, K, D/s1, H/s1, W/s1), ...]`` highest resolution first.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        features: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2),
        depths: Sequence[int] = (1, 1, 1, 2),
        attention_stages: Sequence[int] = (3,),
        num_heads: int = 4,
        deep_supervision: bool = True,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        stage_blocks: Sequence[str] | None = None,
        norm: str = "instance",
        act: str = "leakyrelu",
        attention: str = "mhsa",
        shuffle_attention: str = "identity",
        mbconv_se: bool = True,
        expand_ratio: float = 4.0,
        window_size: int | Sequence[int] | None = None,
        mlp_ratio: float = 2.0,
        decoder_convs: int = 1,
        zero_init_residual: bool = False,
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
        if len(depths) != n or any(int(d) < 0 for d in depths):
            raise ValueError(f"depths must be {n} non-negative ints, got {list(depths)}")
        bad_stages = [s for s in attention_stages if not 0 <= int(s) < n]
        if bad_stages:
            raise ValueError(f"attention_stages {bad_stages} out of range 0..{n - 1}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        if expand_ratio < 1 or mlp_ratio <= 0:
            raise ValueError(
                f"expand_ratio must be >= 1 and mlp_ratio > 0, got {expand_ratio}, {mlp_ratio}"
            )
        attn_set = {int(s) for s in attention_stages}
        if stage_blocks is None:
            stage_blocks = ["mbconv" if i in attn_set else "conv" for i in range(n)]
        if len(stage_blocks) != n:
            raise ValueError(f"stage_blocks must have {n} entries, got {list(stage_blocks)}")
        conv_layers = [conv_block_factory(b, expand_ratio, mbconv_se) for b in stage_blocks]
        norm_t, act_t = get_norm(norm), get_act(act)
        attn_layer = token_mixer_factory(attention, num_heads, window_size)
        if getattr(attn_layer, "func", None) is MultiHeadSelfAttention3d:  # heads split widths
            for s in attention_stages:
                if num_heads < 1 or features[s] % num_heads:
                    raise ValueError(
                        f"num_heads={num_heads} must divide features[{s}]={features[s]}"
                    )

        self.in_channels, self.num_classes = in_channels, num_classes
        self.deep_supervision = deep_supervision
        self.activation_checkpointing = activation_checkpointing
        self.channels_last_3d = channels_last_3d
        self.total_stride = product_stride(strides3)

        total_blocks = max(1, sum(depths))
        rates = [drop_path * j / max(1, total_blocks - 1) for j in range(total_blocks)]
        self.stages = nn.ModuleList()
        block_idx, prev = 0, in_channels
        for i, f in enumerate(features):
            layers: list[nn.Module] = [
                ConvNormAct3d(prev, f, kernels3[i], strides3[i], norm_t, act_t)
            ]
            for _ in range(int(depths[i])):
                rate = rates[block_idx]
                block_idx += 1
                if i in attn_set:
                    block: nn.Module = HybridEncoderBlock(
                        f, f, kernels3[i], 1, norm_t, act_t, conv_layers[i], attn_layer,
                        mlp_ratio, rate,
                    )  # fmt: skip
                else:
                    block = conv_layers[i](f, f, kernels3[i], 1, norm=norm_t, act=act_t,
                                           drop_path=rate)  # fmt: skip
                layers.append(block)
            if dropout > 0 and i > 0:
                layers.append(nn.Dropout3d(dropout))
            self.stages.append(nn.Sequential(*layers))
            prev = f
        self.decoder = UNetDecoder(
            features,
            strides3,
            kernels3,
            num_classes,
            norm_t,
            act_t,
            decoder_convs,
            partial(make_skip_attention, shuffle_attention),
        )
        if zero_init_residual:
            for module in self.stages.modules():
                if hasattr(module, "zero_init_last"):
                    module.zero_init_last()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input(x, self.in_channels, self.total_stride)
        skips = run_encoder(self.stages, x, self.activation_checkpointing and self.training)
        all_levels = self.training and self.deep_supervision
        outputs = self.decoder(skips, all_levels)
        return outputs if all_levels else outputs[0]
