"""Benchmark whole-volume inference on CPU: our sliding window vs MONAI's, ONNX Runtime vs torch.

For a hippocampus case and the anisotropic full-head T1 DICOM series (both preprocessed with
the plan the planner makes for MSD Hippocampus: 1 mm, z-score, 40 x 56 x 40 windows), it
times one whole-volume softmax prediction with the same network, overlap, batch of windows
and Gaussian blending:

* ours: :class:`hybrid_unet.inference.sliding_window.SlidingWindow` with a torch forward;
* MONAI: ``monai.inferers.sliding_window_inference`` (``mode="gaussian"``, same sigma);
* ONNX: our sliding window with the network exported to ONNX and run by ONNX Runtime.

Medians of ``--repeats`` (hippocampus) and ``--repeats-large`` (T1) runs, the three paths
interleaved so that a change in the machine's load hits all alike; the first (small) case is
run once more before timing as a warm-up. Preprocessing (crop, resample, normalise) and mapping
the label back are timed apart: they are the same for every path. Torch and ONNX Runtime use
one thread each (pin the process to one core with ``taskset -c 1``, as docs/benchmarks.md did).

    taskset -c 1 python scripts/benchmark_inference.py [--model hybrid_unet] [--repeats 10]
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HYBRID_UNET_DATA", ROOT.parent / "shared" / "data"))
CASES = {
    "hippocampus_001 (NIfTI)": DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz",
    "full-head T1 (DICOM, 22 x 320 x 280)": DATA / "dicom" / "Study3_11-T1post-18670",
}
PATCH = (40, 56, 40)
STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]


def build_model(name: str) -> torch.nn.Module:
    """``conf/model/<name>.yaml`` for 1 channel, 3 classes, the hippocampus plan's strides."""
    from hydra.utils import get_object, instantiate

    from hybrid_unet.models.report import model_config

    node = model_config(name, in_channels=1, num_classes=3)
    if "strides" in inspect.signature(get_object(node["_target_"])).parameters:
        node["strides"] = STRIDES  # SegResNet and SwinUNETR have no such setting
    return instantiate(node).eval()


def timed(fns, repeats: int, warm_up: bool) -> list[tuple[float, np.ndarray]]:
    """Median seconds and last output of each function; runs interleave, so a change in the
    machine's load hits every path alike."""
    outs = [fn() if warm_up else None for fn in fns]  # allocator, ONNX Runtime's first run
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t), out) for t, out in zip(times, outs, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hybrid_unet", help="a conf/model/ option")
    parser.add_argument("--repeats", type=int, default=10, help="runs of the hippocampus case")
    parser.add_argument("--repeats-large", type=int, default=1, help="runs of the T1 series")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--case", default="", help="only cases whose name contains this")
    args = parser.parse_args()

    import onnxruntime as ort
    from monai.inferers import sliding_window_inference

    from hybrid_unet.data.io import read_image
    from hybrid_unet.data.planning import Plan
    from hybrid_unet.data.preprocessing import prepare_case, revert_preprocessing
    from hybrid_unet.inference.sliding_window import SlidingWindow, softmax, window_starts

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(args.model)
    plan = Plan(spacing=[1.0, 1.0, 1.0], patch_size=list(PATCH), batch_size=7, strides=STRIDES,
                kernel_sizes=[[3, 3, 3]] * 4, normalization=["zscore"],
                intensity_properties=[{}])  # fmt: skip
    window = SlidingWindow(overlap=args.overlap, batch_size=args.batch)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        axes = {0: "b", 2: "d", 3: "h", 4: "w"}
        torch.onnx.export(model, (torch.zeros(1, 1, *PATCH),), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes})  # fmt: skip
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @torch.no_grad()
    def torch_forward(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch)).numpy()

    def onnx_forward(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"image": batch})[0]

    print(f"network {args.model}, windows {PATCH}, overlap {args.overlap}, {args.batch} per "
          f"pass, Gaussian sigma 1/8, fp32, torch threads {torch.get_num_threads()}, "
          f"CPUs allowed {len(os.sched_getaffinity(0))}")  # fmt: skip
    header = ("| case | preprocessed shape | windows | preprocess + revert (s) | ours (s) "
              "| MONAI (s) | MONAI / ours | ONNX Runtime (s) | torch / ORT "
              "| max diff ours-MONAI | max diff ORT-torch |")  # fmt: skip
    print(header)
    print("|---" * 11 + "|")
    cases = {k: v for k, v in CASES.items() if args.case in k}
    for i, (name, source) in enumerate(cases.items()):
        image, geometry = read_image(source)
        start = time.perf_counter()
        x, _, props = prepare_case(image, None, geometry, plan)
        revert_preprocessing(np.zeros(x.shape[1:], np.uint8), props)
        t_prep = time.perf_counter() - start
        windows = np.prod([len(window_starts(max(s, p), p, args.overlap))
                           for s, p in zip(x.shape[1:], PATCH, strict=True)])  # fmt: skip
        repeats = args.repeats if i == 0 else args.repeats_large

        def ours(forward=torch_forward, x=x):
            return softmax(window(x, forward, 3, PATCH), inplace=True)

        @torch.no_grad()
        def monai(x=x):
            logits = sliding_window_inference(torch.from_numpy(x)[None], PATCH, args.batch,
                                              model, overlap=args.overlap, mode="gaussian",
                                              sigma_scale=0.125)  # fmt: skip
            return torch.softmax(logits, 1)[0].numpy()

        (t_ours, p_ours), (t_monai, p_monai), (t_onnx, p_onnx) = timed(
            [ours, monai, lambda: ours(onnx_forward)], repeats, i == 0
        )
        print(f"| {name} | {' x '.join(map(str, x.shape[1:]))} | {windows} | {t_prep:.2f} | "
              f"{t_ours:.2f} | "
              f"{t_monai:.2f} | {t_monai / t_ours:.2f} | {t_onnx:.2f} | {t_ours / t_onnx:.2f} | "
              f"{np.abs(p_ours - p_monai).max():.1e} | {np.abs(p_onnx - p_ours).max():.1e} |")  # fmt: skip
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
