"""Depthwise 3D convolution with a backward pass that is fast on CPU.

PyTorch's CPU backward of a depthwise ``Conv3d`` (``groups == channels``) takes a slow generic
path. At 512 channels on a 4x6x4 map (HybridUNet's MBConv bottleneck, batch 4, one thread)
the forward takes about 1 ms and the backward about 35 ms, several times a dense 128-channel
3x3x3 conv-norm-activation on the same map. :class:`DepthwiseConv3d` has ``nn.Conv3d``'s
parameters and state-dict keys and computes the backward from two cheap pieces:

* the input gradient is a depthwise *forward* conv of the output gradient with the kernel
  flipped (stride 1 and "same" padding make the adjoint another such conv), and
* the weight gradient is, per kernel offset, the sum over batch and space of the output
  gradient times the shifted input, accumulated in float32 (or float64);

both run channels-last, where oneDNN's depthwise conv is several times faster. Forward plus
backward, one thread (``tests/models/test_depthwise.py`` checks the numbers against
``nn.Conv3d``): 512 channels at 4x6x4, bf16 autocast, 45 -> 9 ms; 64 channels at 16x24x16,
224 -> 97 ms.

The fast path needs a CPU tensor and stride 1 (the padding is always ``kernel // 2``): every
depthwise conv of the network blocks when training on CPU. A GPU, a stride, no gradient, and
tracing for export take ``nn.Conv3d``'s own path, so exported graphs hold a plain
convolution.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from hybrid_unet.models.blocks.layers import triple

_CL = torch.channels_last_3d


class _DepthwiseConv3dFunction(torch.autograd.Function):
    # Channels-last throughout: oneDNN's depthwise conv is ~7x faster so, and the weight
    # gradient's per-offset sums run over rows with the channels contiguous.

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.weight_strides = weight.stride()  # the parameter's own layout, for its gradient
        x = x.contiguous(memory_format=_CL)
        weight = weight.contiguous(memory_format=_CL)
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv3d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        pad = ctx.padding
        grad = grad.contiguous(memory_format=_CL)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip((2, 3, 4)).to(grad.dtype).contiguous(memory_format=_CL)
            grad_x = F.conv3d(grad, flipped, None, 1, pad, 1, x.shape[1])
        if ctx.needs_input_grad[1]:
            # (B, D, H, W, C) views of channels-last tensors are contiguous.
            acc = torch.promote_types(grad.dtype, torch.float32)  # bf16/fp16 sum in fp32
            g = grad.to(acc).permute(0, 2, 3, 4, 1)
            xp = F.pad(x.to(acc), (pad[2], pad[2], pad[1], pad[1], pad[0], pad[0]))
            xp = xp.contiguous(memory_format=_CL).permute(0, 2, 3, 4, 1)
            _, d, h, w, _ = g.shape
            kd, kh, kw = weight.shape[2:]
            grad_w = grad.new_empty((kd, kh, kw, weight.shape[0]), dtype=acc)
            for i, j, k in itertools.product(range(kd), range(kh), range(kw)):
                shifted = xp[:, i : i + d, j : j + h, k : k + w]
                grad_w[i, j, k] = (g * shifted).sum((0, 1, 2, 3))
            grad_w = grad_w.permute(3, 0, 1, 2).unsqueeze(1).to(weight.dtype)
            # In the parameter's strides: DDP's gradient buckets are views with those strides.
            grad_w = grad_w.new_empty_strided(weight.shape, ctx.weight_strides).copy_(grad_w)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3, 4), dtype=torch.promote_types(grad.dtype, torch.float32))
            grad_b = grad_b.to(grad.dtype)
        return grad_x, grad_w, grad_b, None


class DepthwiseConv3d(nn.Conv3d):
    """``nn.Conv3d(channels, channels, kernel, padding=kernel // 2, groups=channels)`` whose
    training backward runs fast on CPU (see the module docstring).

    Args:
        channels: input and output channels.
        kernel_size: odd kernel, int or per axis (D, H, W).
        stride: int or per axis; a stride other than 1 uses ``nn.Conv3d``'s backward.
        bias: learnable per-channel bias.

    Shape: ``(B, C, D, H, W) -> (B, C, D/sd, H/sh, W/sw)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        bias: bool = True,
    ) -> None:
        kernel = triple(kernel_size, "kernel_size")
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"depthwise kernel must be odd per axis, got {kernel}")
        super().__init__(
            channels, channels, kernel, triple(stride, "stride"), tuple(k // 2 for k in kernel),
            groups=channels, bias=bias,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = (
            torch.is_grad_enabled()
            and x.device.type == "cpu"  # CUDA's own depthwise backward is fast
            and self.stride == (1, 1, 1)
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
            and x.shape[1] == self.in_channels
        )
        if not fast:
            return super().forward(x)
        weight, bias = self.weight, self.bias
        device = x.device.type
        if torch.is_autocast_enabled(device):
            # What autocast does for a convolution: inputs and parameters in its dtype.
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device, enabled=False):
            return _DepthwiseConv3dFunction.apply(x, weight, bias, self.padding)
