"""Median training-step time of a config on real batches.

    python scripts/benchmark_step.py [--steps N] [--warmup W] OVERRIDE ...

OVERRIDE: the same overrides as ``python -m hybrid_unet.train``.

Prints, per step after warm-up, the median wall time of loading a batch and of the step
(forward, backward, clip, optimizer), and the process CPU time per step: on a shared machine
the CPU time divided by the thread count estimates the wall time of an idle one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from hybrid_unet.config.schema import register_configs
from hybrid_unet.config.validate import check_config
from hybrid_unet.engine import build
from hybrid_unet.engine.step import train_step

# This checkout's configs, not those of the installed package.
CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (at least 1)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*args.overrides, "paths.output_dir=/tmp"])
    resolved = check_config(cfg)
    t = resolved["trainer"]
    if t["num_threads"]:
        torch.set_num_threads(t["num_threads"])
    device = build.resolve_device(t["device"])
    with tempfile.TemporaryDirectory() as run_dir:
        data = build.build_data(resolved, Path(run_dir))
        model = build.build_model(resolved).to(device)
        loss_fn = build.build_loss(resolved).to(device)
        optimizer = build.build_optimizer(resolved, model, loss_fn)
        scaler = torch.amp.GradScaler(device.type, enabled=t["precision"] == "fp16")
        batches = iter(build.build_train_loader(resolved, data, 0))
        load_s, step_s, cpu_s = [], [], []
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            batch = {k: v.to(device) for k, v in next(batches).items()}
            t1, c1 = time.perf_counter(), time.process_time()
            train_step(model, loss_fn, optimizer, scaler, [batch], t["precision"], t["grad_clip"])
            t2, c2 = time.perf_counter(), time.process_time()
            if i >= args.warmup:
                load_s.append(t1 - t0)
                step_s.append(t2 - t1)
                cpu_s.append(c2 - c1)
    params = sum(p.numel() for p in model.parameters())
    print(f"params {params / 1e6:.2f} M, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"median of {args.steps}: batch {statistics.median(load_s):.3f} s, "
          f"step {statistics.median(step_s):.3f} s, step CPU {statistics.median(cpu_s):.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
