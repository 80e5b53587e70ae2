"""Can the data loader keep the training step fed? Preprocessing, loader and model throughput.

Usage::

    python scripts/benchmark_loader.py [--root ../shared/data/hippocampus] [--quick]
                                       [--workers 0 1 2]

Measures, for a Decathlon dataset with the default augmentation of ``conf/data/hippocampus.yaml``:

1. cold preprocessing (validation, fingerprint, plan, every case) into a fresh temporary cache;
2. the per-transform cost of the augmentation;
3. loader throughput (patches/s) of the trainer's own loader (``build_train_loader``) with
   each worker count, the ``data.num_workers`` default included;
4. the training step (default HybridUNet with the plan's strides, DiceCE with deep
   supervision, AdamW, bf16 autocast) on pre-loaded batches, in patches/s;
5. the same training steps fed live by each loader, since workers compete with the step for
   the same cores.

Ratios are loader patches/s over model patches/s: below 1.0 the step waits for data.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from itertools import cycle
from pathlib import Path

import torch
from hydra.utils import instantiate
from monai.data import set_track_meta
from omegaconf import OmegaConf

from hybrid_unet.data.patches import PatchDataset
from hybrid_unet.data.planning import apply_plan
from hybrid_unet.data.real import DatasetSource
from hybrid_unet.data.splits import load_or_create_splits
from hybrid_unet.engine.build import TrainingData, build_loss, build_train_loader, instantiate_model
from hybrid_unet.engine.step import train_step

CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_ROOT = Path(os.environ.get("HYBRID_UNET_DATA", "../shared/data")) / "hippocampus"
PREFETCH = 4  # build_train_loader's prefetch_factor: batches each worker may hold ready


def _node(path: Path) -> dict:
    """A config YAML as a plain dict (interpolations dropped: we fill those keys ourselves)."""
    cfg = OmegaConf.load(path)
    keys = [k for k in cfg if not OmegaConf.is_interpolation(cfg, k)]
    return {
        k: OmegaConf.to_container(cfg[k]) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in keys
    }


def build_config(source: DatasetSource) -> dict:
    """The slice of the composed config the loader and the model need, filled from the plan."""
    data = _node(CONF / "data" / "hippocampus.yaml")
    data["num_classes"], data["in_channels"] = source.num_classes, source.in_channels
    model = _node(CONF / "model" / "hybrid_unet.yaml")
    model["in_channels"], model["num_classes"] = source.in_channels, source.num_classes
    apply_plan(source.plan, data, model)
    return {
        "data": data,
        "model": model,
        "loss": _node(CONF / "loss" / "dice_ce.yaml"),
        "optimizer": _node(CONF / "optimizer" / "adamw.yaml"),
        "trainer": _node(CONF / "trainer" / "default.yaml"),
        "seed": 42,
    }


def profile_transform(cfg: dict, source: DatasetSource, names: list[str], n: int) -> dict:
    """Mean milliseconds per patch of each augmentation step (skipped draws included)."""
    d = cfg["data"]
    dataset = PatchDataset(source, names, d["patch_size"], d["batch_size"],
                           d["oversample_foreground"], None, seed=0)  # fmt: skip
    transform = instantiate(d["augmentation"])
    samples = [dataset[i] for i in range(n)]
    cost: dict[str, float] = defaultdict(float)
    threads = torch.get_num_threads()
    set_track_meta(False)  # as the transform itself runs its parts
    torch.set_num_threads(1)
    for sample in samples:
        x = {"image": sample["image"].clone(), "label": sample["label"].clone()}
        for i, part in enumerate(transform.compose.transforms):
            start = time.perf_counter()
            x = part(x)
            cost[f"{i:2d} {type(part).__name__}"] += time.perf_counter() - start
    torch.set_num_threads(threads)
    start = time.perf_counter()  # what num_workers=0 cost before the transform pinned 1 thread
    for sample in samples:
        transform.compose({"image": sample["image"].clone(), "label": sample["label"].clone()})
    cost[f"all parts at {threads} intra-op threads (unguarded)"] = time.perf_counter() - start
    set_track_meta(True)
    start = time.perf_counter()
    for i, sample in enumerate(samples):
        transform({"image": sample["image"].numpy(), "label": sample["label"].numpy()}, i)
    cost["whole transform (as PatchDataset calls it)"] = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n, 2 * n):
        dataset[i]
    cost["crop only (first load of a case included)"] = time.perf_counter() - start
    return {k: 1000 * v / n for k, v in cost.items()}


def loader_rate(cfg: dict, data: TrainingData, workers: int, batches: int) -> float:
    """Steady-state patches/s of the trainer's loader: the prefetched surplus is not counted."""
    cfg = {**cfg, "data": {**cfg["data"], "num_workers": workers}}
    loader = iter(build_train_loader(cfg, data, start_step=0))
    skip = 1 + workers * PREFETCH  # startup, then drain what was prefetched meanwhile
    for _ in range(skip):
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    elapsed = time.perf_counter() - start
    del loader
    return batches * cfg["data"]["batch_size"] / elapsed


class Stepper:
    """The default model, loss and optimizer; ``step(batch)`` is one trainer step (bf16)."""

    def __init__(self, cfg: dict) -> None:
        torch.manual_seed(0)
        self.model = instantiate_model(cfg["model"]).train()
        self.loss = build_loss(cfg)
        params = [*self.model.parameters(), *self.loss.parameters()]
        self.optimizer = instantiate(cfg["optimizer"])(params)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.clip = cfg["trainer"]["grad_clip"]

    def step(self, batch: dict) -> None:
        train_step(self.model, self.loss, self.optimizer, self.scaler, [batch], "bf16", self.clip)

    def timed(self, batches, steps: int) -> list[float]:
        """Seconds per step over ``steps`` steps, batches drawn from the iterator."""
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.step(next(batches))
            times.append(time.perf_counter() - start)
        return times


def main(argv: list[str] | None = None) -> None:
    defaults = _node(CONF / "data" / "hippocampus.yaml")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="Decathlon dataset")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="loader worker counts besides the default data.num_workers")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="fewer batches and steps")
    args = parser.parse_args(argv)
    default_workers = int(defaults["num_workers"])
    workers = sorted({*args.workers, default_workers})
    batches, steps, profile_n = (6, 2, 8) if args.quick else (20, 3, 24)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        source_cfg = defaults["source"]
        start = time.perf_counter()
        source = DatasetSource(args.root, tmp, num_workers=source_cfg["num_workers"],
                               memory_budget_voxels=source_cfg["memory_budget_voxels"])  # fmt: skip
        preprocess_s = time.perf_counter() - start
        names = source.case_names()
        print(f"cold preprocessing of {len(names)} cases ({source_cfg['num_workers']} processes: "
              f"validate, fingerprint, plan, crop/resample/normalise): {preprocess_s:.1f} s")  # fmt: skip
        print(source.plan.table())
        cfg = build_config(source)
        fold = load_or_create_splits(Path(tmp) / "splits.json", names, 5, cfg["seed"])[0]
        data = TrainingData(source, fold["train"], fold["val"])
        batch_size = cfg["data"]["batch_size"]

        print(f"\naugmentation cost per patch, mean of {profile_n} patches (ms):")
        for key, ms in profile_transform(cfg, source, data.train_names, profile_n).items():
            print(f"  {key:<44} {ms:8.2f}")

        stepper = Stepper(cfg)
        serial = {**cfg, "data": {**cfg["data"], "num_workers": 0}}
        preloaded = [next(iter(build_train_loader(serial, data, i))) for i in range(2)]
        stepper.timed(cycle(preloaded), 1)  # warm-up: allocator, oneDNN kernels
        rows, all_base = [], []
        for w in workers:
            rate = loader_rate(cfg, data, w, batches)
            # Pre-loaded steps right before the fed ones: the shared machine's load drifts.
            base = stepper.timed(cycle(preloaded), steps)
            wcfg = {**cfg, "data": {**cfg["data"], "num_workers": w}}
            live = iter(build_train_loader(wcfg, data, start_step=100))
            next(live)  # worker startup is not part of a training step
            fed = stepper.timed(live, steps)
            del live  # stops the workers
            all_base += base
            rows.append((w, rate, statistics.median(base), statistics.median(fed)))

    step_s = statistics.median(all_base)
    model_rate = batch_size / step_s
    print(f"\ntraining step on pre-loaded batches, batch {batch_size} x {cfg['data']['patch_size']}, "
          f"bf16: median {step_s:.2f} s of {len(all_base)} -> {model_rate:.2f} patches/s")  # fmt: skip
    print(f"\n{'workers':>8} {'loader patches/s':>17} {'ratio':>6} {'preloaded step s':>17} "
          f"{'fed step s':>11} {'fed/preloaded':>14}")  # fmt: skip
    for w, rate, base, fed in rows:
        mark = "  <- data.num_workers default" if w == default_workers else ""
        print(f"{w:>8} {rate:>17.1f} {rate / model_rate:>6.1f} {base:>17.2f} {fed:>11.2f} "
              f"{base / fed:>14.2f}{mark}")  # fmt: skip
    print("ratio = loader patches/s / model patches/s (>= 1: the loader keeps up); fed/preloaded = "
          "step throughput when that loader feeds the steps live, over pre-loaded batches")  # fmt: skip


if __name__ == "__main__":
    main()
