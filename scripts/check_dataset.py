"""Check a dataset before training: layout, every case, then the fingerprint and plan.

Usage::

    python scripts/check_dataset.py ../shared/data/hippocampus [--workers 2] [--no-plan]

Prints one line per problem and exits 1 when there is any (2 when the layout itself is
unusable); otherwise prints the fingerprint summary and the automatic plan.
"""

from __future__ import annotations

import argparse
import sys
import time

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.fingerprint import compute_fingerprint
from hybrid_unet.data.layouts import detect_layout
from hybrid_unet.data.planning import DEFAULT_MEMORY_BUDGET, plan_experiment
from hybrid_unet.data.validation import collect_problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset folder (dataset.json) or HDF5 file")
    parser.add_argument("--workers", type=int, default=2, help="reader processes")
    parser.add_argument("--budget", type=int, default=DEFAULT_MEMORY_BUDGET, help="voxels/batch")
    parser.add_argument("--no-plan", action="store_true", help="skip fingerprint and plan")
    args = parser.parse_args(argv)

    try:
        layout = detect_layout(args.root)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{layout.root}: {layout.kind} layout, {len(layout.cases)} labelled cases")
    ignore = layout.ignore_label
    print(f"labels: {layout.labels}  modality: {layout.modality}"
          + (f"  ignore label: {ignore}" if ignore is not None else ""))  # fmt: skip
    start = time.perf_counter()
    values = [*layout.labels, *([] if ignore is None else [ignore])] or None
    problems = collect_problems(layout.cases, values, args.workers, len(layout.modality) or None)
    print(f"checked {len(layout.cases)} cases in {time.perf_counter() - start:.1f}s")
    if not layout.cases:
        problems.append("no labelled cases found")
    if problems:
        print(f"{len(problems)} problem(s):")
        for line in problems:
            print(f"  - {line}")
        return 1
    print("no problems found")
    if args.no_plan:
        return 0
    fp = compute_fingerprint(layout.cases, layout.modality, args.workers, ignore)
    print(f"median shape {fp.median_shape.tolist()}  median spacing {fp.median_spacing.tolist()}")
    print(f"foreground intensity {fp.intensity}")
    print(f"class frequencies {fp.class_frequencies}")
    print(plan_experiment(fp, args.budget).table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
