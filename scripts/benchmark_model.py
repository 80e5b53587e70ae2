"""Benchmark one training step of the package's models on CPU.

For each plan (hippocampus: batch 8 of 40x56x40; large: batch 2 of 96^3) and model
(HybridUNet, PlainUNet, SwinUNETR from ``conf/model/*.yaml``) it prints the median time of
forward + backward + AdamW step after warm-up, the peak RSS of a fresh process, parameters and
forward FLOPs per patch, with each ratio to PlainUNet. Each measurement runs in its own
subprocess so that peak memory is per model.

    python scripts/benchmark_model.py --bf16 --steps 5
    python scripts/benchmark_model.py --quick   # hippocampus plan, fewer steps
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLANS = {"hippocampus": (8, (40, 56, 40)), "large": (2, (96, 96, 96))}
MODELS = ("hybrid_unet", "plain_unet", "swin_unetr")
BASELINE = "plain_unet"


def build(name: str, in_channels: int, num_classes: int):
    """Instantiate ``conf/model/<name>.yaml`` with the data fields filled in."""
    from hydra.utils import instantiate

    from hybrid_unet.models.report import model_config

    return instantiate(model_config(name, in_channels=in_channels, num_classes=num_classes))


def measure_one(args: argparse.Namespace) -> dict:
    """Run in a child process: build, warm up, time ``args.steps`` training steps."""
    import torch
    import torch.nn.functional as F

    from hybrid_unet.models.report import model_report

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, patch = PLANS[args.plan]
    model = build(args.one, 1, 3)
    if any(p % s for p, s in zip(patch, model.total_stride, strict=True)):
        return {"skipped": f"patch {patch} not divisible by {model.total_stride}"}
    dtype = torch.bfloat16 if args.bf16 else None
    report = model_report(model, patch, batch_size=1, in_channels=1, dtype=dtype)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, *patch)
    y = torch.randint(0, 3, (batch, *patch))
    autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext()
    model.train()
    times = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with autocast:
            out = model(x)
        outs = out if isinstance(out, list) else [out]
        loss = sum(
            F.cross_entropy(o.float(), F.interpolate(y[:, None].float(), o.shape[2:])[:, 0].long())
            for o in outs
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "step_s": statistics.median(times),
        "peak_rss_mib": peak,
        "step_rss_mib": peak - rss_before,
        "params": report["params"],
        "gflops": report["flops_per_patch"] / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU)")
    parser.add_argument("--quick", action="store_true", help="hippocampus plan, 3 steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args)))
        return
    if args.quick:
        args.plans, args.steps, args.warmup = ["hippocampus"], 3, 1
    precision = "bf16 autocast" if args.bf16 else "fp32"
    print(
        f"| plan | model | step s | peak RSS MiB | params M | GFLOPs/patch | "
        f"time / memory / params vs {BASELINE} |"
    )
    print("|---|---|---|---|---|---|---|")
    for plan in args.plans:
        results = {}
        for name in args.models:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                name,
                "--plan",
                plan,
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--threads",
                str(args.threads),
            ] + (["--bf16"] if args.bf16 else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                results[name] = {"skipped": proc.stderr.strip().splitlines()[-1][:80]}
            else:
                results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        base = results.get(BASELINE, {})
        batch, patch = PLANS[plan]
        for name, r in results.items():
            label = f"{plan} {batch}x{'x'.join(map(str, patch))} {precision}"
            if "skipped" in r:
                print(f"| {label} | {name} | n/a ({r['skipped']}) | | | | |")
                continue
            ratio = "n/a"
            if "step_s" in base:
                ratio = " / ".join(
                    f"{r[k] / base[k]:.2f}" for k in ("step_s", "peak_rss_mib", "params")
                )
            print(
                f"| {label} | {name} | {r['step_s']:.2f} | {r['peak_rss_mib']:.0f} | "
                f"{r['params'] / 1e6:.2f} | {r['gflops']:.1f} | {ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
