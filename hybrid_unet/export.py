"""Export a trained run for deployment: ONNX (with its plan) and TorchScript.

    python -m hybrid_unet.export RUN_DIR_OR_CHECKPOINT OUT_DIR [--mirror-axes auto] [--overlap 0.5]

Writes ``OUT_DIR/model.onnx`` (dynamic batch and spatial axes) and ``OUT_DIR/model.ts``. Both
carry, as a JSON entry ``hybrid_unet`` (ONNX metadata / TorchScript extra file), what
prediction needs besides the weights: the plan (spacing, normalisation), class names, window
size, sliding-window settings and the post-processing decision. The ONNX model is checked
against PyTorch with ONNX Runtime on a random input of a size not seen at export; the maximum
absolute difference is printed, and above ``--tolerance`` times ``max(1, max |logit|)`` (float
noise grows with the logits' scale), or when ONNX Runtime cannot run the model, the command
prints one ``error:`` line, writes no file and exits with 1. Run the
exported model with ``python -m hybrid_unet.inference.onnx_runner`` (no torch needed).
Needs the ``export`` extra (``onnx``, ``onnxruntime``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from hybrid_unet.atomic import atomic_path, temporary_path
from hybrid_unet.cli import output_dir_problem, user_error
from hybrid_unet.inference.onnx_runner import METADATA_KEY
from hybrid_unet.inference.predictor import Predictor
from hybrid_unet.inference.sliding_window import SlidingWindow


def export_metadata(predictor: Predictor, class_names: dict[int, str]) -> dict:
    """The JSON an exported model carries (see the module docstring)."""
    from dataclasses import asdict

    return {
        "plan": asdict(predictor.plan) if predictor.plan is not None else None,
        "num_classes": predictor.num_classes,
        "in_channels": predictor.in_channels,
        "patch_size": list(predictor.patch_size),
        "sliding_window": predictor.sliding_window.settings(),
        "largest_component": list(predictor.largest_component),
        "connectivity": predictor.connectivity,
        "class_names": {str(c): n for c, n in class_names.items()},
    }


def export_onnx(predictor: Predictor, path: str | Path, metadata: dict, opset: int = 18) -> Path:
    """The first network as ONNX, batch and spatial axes dynamic, ``metadata`` attached."""
    import onnx

    path = Path(path)
    model = predictor.models[0].cpu().eval()
    example = torch.zeros(1, predictor.in_channels, *predictor.patch_size)
    axes = {0: "batch", 2: "depth", 3: "height", 4: "width"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # Two warnings that alarm and mean nothing here: the legacy exporter is chosen on
        # purpose, and InstanceNorm without running statistics ("train=True") computes the
        # same in both modes (the parity check below proves the export).
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=".*'instance_norm' is set to train=True")
        # The TorchScript-based exporter: dynamic_axes works and it needs no onnxscript.
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes})  # fmt: skip
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.save(proto, str(tmp))
    return path


def export_torchscript(predictor: Predictor, path: str | Path, metadata: dict) -> Path:
    """The first network traced to TorchScript, ``metadata`` as extra file ``hybrid_unet``."""
    path = Path(path)
    model = predictor.models[0].cpu().eval()
    example = torch.zeros(1, predictor.in_channels, *predictor.patch_size)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={METADATA_KEY: json.dumps(metadata)})
    return path


def unseen_shape(predictor: Predictor, batch: int = 2) -> tuple[int, ...]:
    """An input shape the export never saw: another batch size, each axis one stride larger."""
    stride = getattr(predictor.models[0], "total_stride", (16, 16, 16))
    spatial = [p + s for p, s in zip(predictor.patch_size, stride, strict=True)]
    return (batch, predictor.in_channels, *spatial)


def onnx_parity(
    predictor: Predictor, onnx_path: str | Path, shape: tuple[int, ...]
) -> tuple[float, float]:
    """Largest absolute logit difference, ONNX Runtime vs PyTorch, on a random input, and the
    largest absolute PyTorch logit (the scale the difference is judged against)."""
    import onnxruntime as ort

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = predictor.models[0].cpu().eval()(x).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())


def onnx_max_abs_diff(predictor: Predictor, onnx_path: str | Path, shape: tuple[int, ...]) -> float:
    """Largest absolute logit difference, ONNX Runtime vs PyTorch, on a random input."""
    return onnx_parity(predictor, onnx_path, shape)[0]


def _export_checked(predictor: Predictor, output: Path, meta: dict, args) -> str | None:
    """Write ``model.onnx`` and ``model.ts`` into ``output`` if ONNX Runtime reproduces PyTorch
    within ``args.tolerance * max(1, max |logit|)``; otherwise write nothing and say why."""
    final = {name: output / name for name in ("model.onnx", "model.ts")}
    staged = {name: temporary_path(path) for name, path in final.items()}
    try:
        export_onnx(predictor, staged["model.onnx"], meta, args.opset)
        export_torchscript(predictor, staged["model.ts"], meta)
        shape = unseen_shape(predictor)
        try:
            diff, scale = onnx_parity(predictor, staged["model.onnx"], shape)
        except Exception as exc:  # ONNX Runtime cannot run the export (e.g. a fixed-size mask)
            if os.environ.get("HYBRID_UNET_TRACEBACK") == "1":
                traceback.print_exc()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            return f"ONNX Runtime cannot run the exported model on a {shape} input: {reason}"
        allowed = args.tolerance * max(1.0, scale)
        print(f"ONNX Runtime vs PyTorch on a random {shape} input: max abs diff {diff:.3g} "
              f"(allowed {allowed:.3g}: {args.tolerance:g} x max(1, max |logit| "
              f"{scale:.3g}))")  # fmt: skip
        if not diff <= allowed:
            return (f"ONNX parity: max abs diff {diff:.3g} exceeds {allowed:.3g} "
                    f"(--tolerance {args.tolerance:g} x max(1, max |logit| {scale:.3g}))")  # fmt: skip
        for name, path in final.items():
            os.replace(staged[name], path)
        return None
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)


def _mirror_axes(text: str) -> str | list[int]:
    """``auto``, ``none`` or comma-separated axes (``1,2``) from the command line."""
    if text == "auto":
        return "auto"
    if text == "none":
        return []
    try:
        return [int(a) for a in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"auto, none or axes such as 1,2; got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_unet.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("checkpoint", type=Path, help="run dir (its best.pt) or a checkpoint")
    parser.add_argument("output", type=Path, help="output folder")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    mirror = parser.add_mutually_exclusive_group()
    mirror.add_argument("--mirror-axes", type=_mirror_axes, default="auto",
                        help="mirroring TTA in the runner: auto (as the run validated: its "
                             "trained flip axes with trainer.val_mirror, else none), none, "
                             "or axes such as 1,2")  # fmt: skip
    mirror.add_argument("--mirror", dest="mirror_axes", action="store_const", const=[0, 1, 2],
                        help="mirror along all three axes (--mirror-axes 0,1,2)")  # fmt: skip
    parser.add_argument("--class-names", help="names of classes 1..K-1, comma separated")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="ONNX parity tolerance, relative: the largest logit difference "
                             "may be TOLERANCE x max(1, max |logit|)")  # fmt: skip
    args = parser.parse_args(argv)

    from hybrid_unet.predict import class_names

    problem = output_dir_problem(args.output)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        window = SlidingWindow(overlap=args.overlap, mirror_axes=args.mirror_axes)
        predictor = Predictor(args.checkpoint, "cpu", sliding_window=window)
        names = class_names(predictor, args.class_names.split(",") if args.class_names else None)
    except Exception as exc:  # a missing, truncated or corrupt checkpoint, a bad option
        message = str(exc) if isinstance(exc, ValueError) else user_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    created = not args.output.exists()
    args.output.mkdir(parents=True, exist_ok=True)
    problem = _export_checked(predictor, args.output, export_metadata(predictor, names), args)
    if problem:
        if created:
            with contextlib.suppress(OSError):
                args.output.rmdir()
        print(f"error: {args.checkpoint}: {problem}; nothing written", file=sys.stderr)
        return 1
    print(f"Wrote {args.output / 'model.onnx'} and {args.output / 'model.ts'}")
    return 0


if __name__ == "__main__":
    from hybrid_unet.cli import plain_warnings

    plain_warnings()
    sys.exit(main())
