"""Score predicted label maps against references, per case and per class.

    python -m hybrid_unet.evaluate PREDICTIONS REFERENCES --num-classes K [--out metrics.json]

Both are folders of NIfTI label maps matched by file name. Distances use each reference's
voxel spacing. Prints the per-class means and writes per-case values as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hybrid_unet.data.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_unet.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("predictions", type=Path)
    parser.add_argument("references", type=Path)
    parser.add_argument("--num-classes", type=int, required=True, help="K, background included")
    parser.add_argument("--metrics", default="dice,iou,precision,recall,hd95,nsd")
    parser.add_argument("--tolerance-mm", type=float, default=1.0)
    parser.add_argument("--out", type=Path, help="write per-case and mean values as JSON")
    args = parser.parse_args(argv)

    from hybrid_unet.data.io import read_label
    from hybrid_unet.metrics import aggregate, case_metrics

    refs = {p.name: p for p in sorted(args.references.glob("*.nii*"))}
    preds = sorted(p for p in args.predictions.glob("*.nii*") if p.name in refs)
    if not preds:
        print(f"error: no prediction in {args.predictions} matches a file in {args.references}",
              file=sys.stderr)  # fmt: skip
        return 2
    names = tuple(args.metrics.split(","))
    per_case = {}
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
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    means = aggregate(per_case.values())
    for key in sorted(k for k in means if k.startswith("mean_")):
        print(f"{key:16s} {means[key]:.4f}")
    print(f"{len(per_case)} cases; {len(refs) - len(per_case)} references without a prediction")
    if args.out:
        args.out.write_text(json.dumps({"mean": means, "cases": per_case}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
