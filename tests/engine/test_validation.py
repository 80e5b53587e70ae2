"""Mirroring test-time augmentation in validation."""

import itertools

import numpy as np
import torch

from hybrid_unet.engine.validation import predict_case, predict_case_mirrored


def test_mirrored_prediction_is_the_mean_over_the_eight_flips():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1).eval()  # not flip-symmetric: its kernel is random
    image = np.random.default_rng(0).normal(size=(1, 8, 12, 10)).astype(np.float32)
    got = predict_case_mirrored(net, image, (8, 12, 10), torch.device("cpu"), overlap=0.0)

    x = torch.from_numpy(image)[None]
    expected = torch.zeros(1, 3, 8, 12, 10)
    flips = [dims for r in range(4) for dims in itertools.combinations((2, 3, 4), r)]
    assert len(flips) == 8
    with torch.no_grad():
        for dims in flips:
            y = torch.softmax(net(x.flip(dims) if dims else x), 1)
            expected += y.flip(dims) if dims else y
    np.testing.assert_allclose(got, (expected / 8)[0].numpy(), atol=1e-5)
    plain = predict_case(net, image, (8, 12, 10), torch.device("cpu"), overlap=0.0)
    assert np.abs(plain - got).max() > 1e-3  # the flips change the answer for this network
