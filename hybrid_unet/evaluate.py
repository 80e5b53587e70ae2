"""Score predicted label maps against references, per case and per class.

    python -m hybrid_unet.evaluate PREDICTIONS REFERENCES --num-classes K [--out DIR]
        [--decide-postprocessing RUN_DIR]

Both are folders of NIfTI label maps matched by file name; distances use each reference's
voxel spacing. Writes ``DIR/metrics.csv`` (one row per case, a column per metric and class)
and ``DIR/summary.json`` (per metric and class: mean, standard deviation and the number of
cases where it is defined; and the mean over foreground classes), and prints the means.

``--decide-postprocessing RUN_DIR`` (predictions made with ``largest_component=[]`` on the
run's validation cases) also decides, per class, whether keeping the largest connected
component raises the mean Dice, and stores the decision in ``RUN_DIR/postprocessing.json``,
which ``predict`` then applies (``largest_component=auto``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from hybrid_unet.data.errors import DataError


def summarize(per_case: dict[str, dict[str, float]]) -> dict:
    """Per key: mean, sd (population) and n over the cases where it is not NaN; class means."""
    from hybrid_unet.metrics import aggregate

    keys = sorted({k for values in per_case.values() for k in values})
    out: dict = {"cases": len(per_case), "per_class": {}}
    for key in keys:
        values = np.asarray([v[key] for v in per_case.values() if not math.isnan(v[key])])
        out["per_class"][key] = {
            "mean": float(values.mean()) if values.size else None,
            "sd": float(values.std()) if values.size else None,
            "n": int(values.size),
        }
    means = aggregate(per_case.values())
    out["mean_over_classes"] = {
        k: (None if math.isnan(v) else v) for k, v in means.items() if k.startswith("mean_")
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_unet.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("predictions", type=Path)
    parser.add_argument("references", type=Path)
    parser.add_argument("--num-classes", type=int, required=True, help="K, background included")
    parser.add_argument("--metrics", default="dice,iou,precision,recall,hd95,nsd")
    parser.add_argument("--tolerance-mm", type=float, default=1.0)
    parser.add_argument("--out", type=Path, help="folder for metrics.csv and summary.json")
    parser.add_argument("--decide-postprocessing", type=Path, metavar="RUN_DIR",
                        help="decide and store largest-component post-processing for a run")  # fmt: skip
    args = parser.parse_args(argv)

    from hybrid_unet.atomic import atomic_write_text
    from hybrid_unet.data.io import read_label
    from hybrid_unet.inference.outputs import csv_text
    from hybrid_unet.inference.postprocessing import POSTPROCESSING_FILE, decide_largest_component
    from hybrid_unet.metrics import case_metrics

    refs = {p.name: p for p in sorted(args.references.glob("*.nii*"))}
    preds = sorted(p for p in args.predictions.glob("*.nii*") if p.name in refs)
    if not preds:
        print(f"error: no prediction in {args.predictions} matches a file in {args.references}",
              file=sys.stderr)  # fmt: skip
        return 2
    names = tuple(args.metrics.split(","))
    per_case, pairs = {}, []
    try:
        for pred_path in preds:
            pred, _ = read_label(pred_path)
            ref, geometry = read_label(refs[pred_path.name])
            if pred.shape != ref.shape:
                raise DataError(
                    pred_path, f"shape {pred.shape} differs from the reference {ref.shape}"
                )
            per_case[pred_path.name] = case_metrics(pred, ref, args.num_classes, geometry.spacing,
                                                    names, args.tolerance_mm)  # fmt: skip
            if args.decide_postprocessing:
                pairs.append((pred, ref))
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = summarize(per_case)
    for key, value in sorted(summary["mean_over_classes"].items()):
        print(f"{key:16s} {'n/a' if value is None else f'{value:.4f}'}")
    print(f"{len(per_case)} cases; {len(refs) - len(per_case)} references without a prediction")
    if args.out:
        rows = [{"case": name, **values} for name, values in per_case.items()]
        atomic_write_text(args.out / "metrics.csv", csv_text(rows))
        atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1))
    if args.decide_postprocessing:
        decision = decide_largest_component(pairs, args.num_classes)
        path = atomic_write_text(args.decide_postprocessing / POSTPROCESSING_FILE,
                                 json.dumps(decision, indent=1))  # fmt: skip
        print(f"Largest component kept for classes {decision['largest_component'] or 'none'}: "
              f"{path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
