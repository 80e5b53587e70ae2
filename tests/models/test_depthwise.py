"""DepthwiseConv3d: the same numbers as ``nn.Conv3d(groups=C)``, forward and backward."""

import pytest
import torch
from torch import nn

from hybrid_unet.models.blocks.depthwise import DepthwiseConv3d


def _pair(channels, kernel, stride=1, bias=True, dtype=torch.float64):
    kernel3 = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
    ref = nn.Conv3d(channels, channels, kernel3, stride, tuple(k // 2 for k in kernel3),
                    groups=channels, bias=bias).to(dtype)  # fmt: skip
    new = DepthwiseConv3d(channels, kernel, stride, bias=bias).to(dtype)
    new.load_state_dict(ref.state_dict())  # same parameters and state-dict keys
    return ref, new


def _grads(module, x, g):
    x = x.clone().requires_grad_()
    module.zero_grad()
    y = module(x)
    y.backward(g)
    return y, x.grad, {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize(
    "channels, shape, kernel, bias",
    [(6, (4, 6, 5), 3, True), (4, (3, 7, 6), (1, 3, 5), False), (3, (2, 2, 2), 3, True)],
)
def test_forward_and_backward_match_conv3d(channels, shape, kernel, bias):
    torch.manual_seed(0)
    ref, new = _pair(channels, kernel, bias=bias)
    x = torch.randn(2, channels, *shape, dtype=torch.float64)
    g = torch.randn(2, channels, *shape, dtype=torch.float64)
    y_ref, gx_ref, gp_ref = _grads(ref, x, g)
    y_new, gx_new, gp_new = _grads(new, x, g)
    torch.testing.assert_close(y_new, y_ref)
    torch.testing.assert_close(gx_new, gx_ref)
    assert gp_new.keys() == gp_ref.keys()
    for name in gp_ref:
        torch.testing.assert_close(gp_new[name], gp_ref[name])


def test_gradcheck():
    torch.manual_seed(0)
    _, new = _pair(2, (3, 1, 3))
    x = torch.randn(1, 2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: new(t), (x,))


def test_strided_conv_takes_the_reference_path():
    torch.manual_seed(0)
    ref, new = _pair(3, 3, stride=2)
    x = torch.randn(1, 3, 6, 6, 6, dtype=torch.float64)
    g = torch.randn(1, 3, 3, 3, 3, dtype=torch.float64)
    for a, b in zip(_grads(ref, x, g)[:2], _grads(new, x, g)[:2], strict=True):
        torch.testing.assert_close(a, b)


def test_bf16_autocast_matches_conv3d_under_autocast():
    torch.manual_seed(0)
    ref, new = _pair(8, 3, dtype=torch.float32)
    x = torch.randn(2, 8, 4, 6, 4)
    g = torch.randn(2, 8, 4, 6, 4)
    with torch.autocast("cpu", torch.bfloat16):
        y_ref, gx_ref, _ = _grads(ref, x, g)
    with torch.autocast("cpu", torch.bfloat16):
        y_new, gx_new, gp_new = _grads(new, x, g)
    assert y_new.dtype == y_ref.dtype == torch.bfloat16
    assert gp_new["weight"].dtype == torch.float32  # the parameter keeps its dtype
    torch.testing.assert_close(y_new.float(), y_ref.float(), atol=0.05, rtol=0.02)
    torch.testing.assert_close(gx_new, gx_ref, atol=0.05, rtol=0.02)
    # The parameter gradients sum bf16 products over 2*4*6*4 positions in float32: compare
    # them with the float32 reference.
    exact = _grads(ref, x, g)[2]
    for name in ("weight", "bias"):
        err = (gp_new[name] - exact[name]).abs().max()
        assert err <= 0.02 * exact[name].abs().max() + 0.05, (name, err)


def test_no_grad_and_tracing_use_a_plain_convolution():
    torch.manual_seed(0)
    ref, new = _pair(4, 3, dtype=torch.float32)
    x = torch.randn(1, 4, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(new(x), ref(x))
    traced = torch.jit.trace(new, x)
    assert "PythonOp" not in str(traced.graph)
    torch.testing.assert_close(traced(x), ref(x))


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="odd"):
        DepthwiseConv3d(4, (3, 2, 3))


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_weight_gradient_has_the_parameters_strides(channels_last):
    """DDP's gradient buckets are views with the parameter's strides; a gradient with others is
    copied into them, with a warning, at every step."""
    conv = DepthwiseConv3d(8, 3)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last_3d)
    conv(torch.randn(2, 8, 6, 6, 6, requires_grad=True)).sum().backward()
    assert conv.weight.grad.stride() == conv.weight.stride()
