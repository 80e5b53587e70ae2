"""Sliding-window stitching, Gaussian weights and batched mirroring, against direct results."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_unet.inference.sliding_window import (
    SlidingWindow,
    gaussian_importance,
    softmax,
    window_starts,
)

RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 2)).astype(np.float32)  # a 1x1x1 "network": 2 channels -> 3 classes


def pointwise(batch: np.ndarray) -> np.ndarray:
    """Logits that depend on each voxel alone: stitching must reproduce them exactly."""
    return np.einsum("kc,ncdhw->nkdhw", W, batch) + 0.5


def direct(image: np.ndarray) -> np.ndarray:
    return pointwise(image[None])[0]


@pytest.mark.parametrize("shape", [(37, 45, 29), (12, 20, 9), (16, 16, 16)])
@pytest.mark.parametrize("mirror_axes", [[], [0, 1, 2]])
def test_stitching_reproduces_a_pointwise_network(shape, mirror_axes):
    image = RNG.standard_normal((2, *shape)).astype(np.float32)
    window = SlidingWindow(overlap=0.5, batch_size=3, mirror_axes=mirror_axes)
    out = window(image, pointwise, 3, (16, 16, 16))
    assert out.shape == (3, *shape) and out.dtype == np.float32
    np.testing.assert_allclose(out, direct(image), atol=1e-5)


def test_half_precision_buffer_is_close_to_float32():
    image = RNG.standard_normal((2, 40, 40, 40)).astype(np.float32)
    full = SlidingWindow()(image, pointwise, 3, (16, 16, 16))
    half = SlidingWindow(half_buffer_above_mb=0)(image, pointwise, 3, (16, 16, 16))
    np.testing.assert_allclose(half, full, atol=2e-2)


def test_mirrored_copies_share_the_forward_pass_and_are_flipped_back():
    calls = []

    def cumsum(batch):  # not flip-equivariant: a mirrored copy that is not flipped back differs
        calls.append(batch.shape[0])
        return np.cumsum(np.concatenate([batch, -batch, batch * 2], axis=1), axis=2)

    image = RNG.standard_normal((1, 16, 16, 16)).astype(np.float32)
    window = SlidingWindow(mirror_axes=[0, 2], batch_size=4)
    out = window(image, cumsum, 3, (16, 16, 16))
    assert calls == [4]  # one window, 4 flips (none, D, W, DW), one pass
    expected = np.mean(
        [np.flip(cumsum(np.flip(image, [a + 1 for a in f])[None])[0], [a + 1 for a in f])
         for f in [(), (0,), (2,), (0, 2)]],
        axis=0,
    )  # fmt: skip
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_windows_are_batched():
    calls = []

    def counting(batch):
        calls.append(batch.shape[0])
        return pointwise(batch)

    image = RNG.standard_normal((2, 16, 32, 48)).astype(np.float32)
    SlidingWindow(overlap=0.0, batch_size=4)(image, counting, 3, (16, 16, 16))
    assert calls == [4, 2]  # 1 x 2 x 3 windows


def test_window_starts_cover_the_axis_evenly():
    assert window_starts(10, 16, 0.5) == [0]
    starts = window_starts(100, 40, 0.5)
    assert starts[0] == 0 and starts[-1] == 60
    assert max(np.diff(starts)) <= 20
    # 21 voxels to cover in steps of at most 8: 4 windows spread evenly, as nnU-Net places them
    # (not 0, 8, 16 and a last window squeezed against the end).
    assert window_starts(37, 16, 0.5) == [0, 7, 14, 21]


def test_gaussian_importance_peaks_in_the_centre():
    g = gaussian_importance((8, 9, 10))
    assert g.shape == (8, 9, 10) and g.max() == pytest.approx(1.0, abs=0.05)
    assert g.min() > 0 and g[0, 0, 0] < g[4, 4, 5]
    np.testing.assert_allclose(g, g[::-1, ::-1, ::-1])


def test_gaussian_sigma_follows_each_axis_of_a_non_cubic_window():
    """sigma = sigma_scale * patch per axis: along a 32-voxel axis the weight falls 4x slower
    (in voxels) than along an 8-voxel one."""
    patch = (8, 16, 32)
    g = gaussian_importance(patch, sigma_scale=0.125)
    profiles = [g[:, 8, 16], g[4, :, 16], g[4, 8, :]]  # through a voxel next to the centre
    for p, profile in zip(patch, profiles, strict=True):
        x = np.arange(p) - (p - 1) / 2.0
        expected = np.exp(-(x**2) / (2 * (0.125 * p) ** 2))
        inner = np.abs(x) <= p / 4  # the tails are clamped at 1e-3
        np.testing.assert_allclose(profile[inner] / profile.max(), expected[inner] / expected.max(),
                                   rtol=1e-4)  # fmt: skip


def test_softmax_sums_to_one():
    p = softmax(RNG.standard_normal((4, 3, 5, 6)).astype(np.float32) * 50)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{"overlap": 1.0}, {"batch_size": 0}, {"mirror_axes": [3]}, {"mirror_axes": [1, 1]},
     {"mirror_axes": "all"}, {"sigma_scale": -1}],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        SlidingWindow(**kwargs)


def test_auto_mirroring_must_be_resolved_before_use():
    """``mirror_axes="auto"`` names a run's validated axes; only a Predictor knows them."""
    window = SlidingWindow(mirror_axes="auto")
    with pytest.raises(ValueError, match="resolved"):
        window(np.zeros((1, 8, 8, 8), np.float32), lambda x: x, 1, (8, 8, 8))


@pytest.mark.parametrize(
    ("shape", "sigma_scale", "mode"),
    [((48, 40, 24), 0.0, "constant"), ((10, 16, 12), 0.125, "gaussian")],
)
def test_matches_monai_where_windows_coincide(shape, sigma_scale, mode):
    """Window placement, padding and stitching agree with MONAI's for the same network.

    The sizes put MONAI's windows where ours go (``size - patch`` a multiple of the step), and
    the second image needs one padded window, where any blending gives the window itself.
    """
    import torch
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1)
    ).eval()
    image = RNG.standard_normal((1, *shape)).astype(np.float32)

    def forward(batch):
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    ours = SlidingWindow(overlap=0.5, batch_size=3, sigma_scale=sigma_scale)
    with torch.no_grad():
        theirs = sliding_window_inference(torch.from_numpy(image)[None], (16, 16, 16), 3, net,
                                          overlap=0.5, mode=mode)  # fmt: skip
    np.testing.assert_allclose(ours(image, forward, 3, (16, 16, 16)), theirs[0].numpy(), atol=1e-5)


def test_a_long_case_reports_its_progress_inside_predict(tmp_path, monkeypatch, capsys):
    """729 windows, a fake clock 10 s on per batch: a line every 30 s of it, on stderr only."""
    import itertools

    import nibabel as nib

    from hybrid_unet.data.io.geometry import Geometry
    from hybrid_unet.inference import sliding_window
    from hybrid_unet.inference.inputs import find_cases
    from hybrid_unet.inference.outputs import predict_cases
    from hybrid_unet.inference.pipeline import Segmentation

    ticks = itertools.count(0.0, 10.0)
    monkeypatch.setattr(sliding_window, "_clock", lambda: next(ticks))
    window = SlidingWindow(batch_size=9)
    image = RNG.standard_normal((2, 40, 40, 40)).astype(np.float32)

    window(image, pointwise, 3, (8, 8, 8))  # outside predict: silent
    assert capsys.readouterr() == ("", "")

    def segmenter(image: np.ndarray, geometry: Geometry) -> Segmentation:
        stacked = np.concatenate([image, image])
        return Segmentation(window(stacked, pointwise, 3, (8, 8, 8)).argmax(0).astype(np.uint8))

    nib.save(nib.Nifti1Image(image[0].T, np.eye(4)), tmp_path / "big.nii.gz")
    nib.save(nib.Nifti1Image(image[0, :8, :8, :8].T, np.eye(4)), tmp_path / "small.nii.gz")
    predict_cases(find_cases(tmp_path), segmenter, tmp_path / "out", {1: "a"}, log=lambda m: None)

    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and lines and all(line.startswith("case big: ") for line in lines)
    assert lines[0] == "case big: 27/729 windows"  # 3 batches of 9 at 10 s each: 30 s
    assert len(lines) == 729 // 27
