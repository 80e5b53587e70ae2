"""Validation predicts as ``predict`` does: the same windows, and mirroring over 8 flips."""

import itertools

import numpy as np
import torch

from hybrid_unet.engine.validation import predict_case
from hybrid_unet.inference.sliding_window import SlidingWindow, softmax
from hybrid_unet.inference.torch_forward import torch_forward


def test_mirrored_prediction_averages_the_logits_of_the_eight_flips():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1).eval()  # not flip-symmetric: its kernel is random
    image = np.random.default_rng(0).normal(size=(1, 8, 12, 10)).astype(np.float32)
    got = predict_case(
        net, image, 3, (8, 12, 10), torch.device("cpu"), overlap=0.0, mirror_axes=(0, 1, 2)
    )

    x = torch.from_numpy(image)[None]
    logits = torch.zeros(1, 3, 8, 12, 10)
    flips = [dims for r in range(4) for dims in itertools.combinations((2, 3, 4), r)]
    assert len(flips) == 8
    with torch.no_grad():
        for dims in flips:
            y = net(x.flip(dims) if dims else x)
            logits += y.flip(dims) if dims else y
    np.testing.assert_allclose(got, torch.softmax(logits / 8, 1)[0].numpy(), atol=1e-5)
    plain = predict_case(net, image, 3, (8, 12, 10), torch.device("cpu"), overlap=0.0)
    assert np.abs(plain - got).max() > 1e-3  # the flips change the answer for this network


def test_validation_uses_the_windows_of_predict():
    """A volume larger than the window: the same stitched probabilities as the predictor's
    sliding window, so a run's validation Dice is the Dice its predictions will have."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.InstanceNorm3d(3))
    image = np.random.default_rng(1).normal(size=(1, 13, 17, 11)).astype(np.float32)
    got = predict_case(net.eval(), image, 3, (8, 8, 8), torch.device("cpu"), overlap=0.5)
    window = SlidingWindow([8, 8, 8], overlap=0.5)
    logits = window(image, torch_forward(net, torch.device("cpu")), 3, (8, 8, 8))
    np.testing.assert_allclose(got, softmax(logits), atol=1e-6)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-5)


def test_scoring_the_reference_runs_the_network_and_scores_a_perfect_prediction():
    """What a run on a time budget times before training: the network's windows as validation
    runs them, and metrics of a prediction as close as a trained network's (the reference)."""
    from types import SimpleNamespace

    from hybrid_unet.engine.validation import validate

    label = np.zeros((12, 12, 12), dtype=np.int64)
    label[2:8, 3:9, 2:7], label[8:11, 3:9, 2:7] = 1, 2
    case = SimpleNamespace(name="c", image=np.ones((1, 12, 12, 12), np.float32), label=label,
                           spacing=(1.0, 1.0, 1.0))  # fmt: skip
    calls = []
    net = torch.nn.Conv3d(1, 3, 1)
    net.register_forward_hook(lambda *_: calls.append(1))
    metrics = ("dice", "hd95", "nsd")
    args = (net, [case], 3, (8, 8, 8), torch.device("cpu"), "fp32", 0.5, 4, metrics)
    summary, _ = validate(*args, score_reference=True)
    assert calls and net.training  # the windows ran; the mode is restored
    assert (
        summary["mean_dice"] == 1.0 and summary["mean_hd95"] == 0.0 and summary["mean_nsd"] == 1.0
    )
    scored, _ = validate(*args)  # the untrained network's own prediction
    assert scored["mean_dice"] < 1.0
