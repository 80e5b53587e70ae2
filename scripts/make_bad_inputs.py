"""Write the bad-input corpus of the reliability suite (tests/fixtures/bad_inputs.py) to a folder.

Usage::

    python scripts/make_bad_inputs.py /tmp/bad_inputs

One sub-folder per variant, plus ``index.json`` listing the kind, the training arguments that
must fail, and what the error must name. The suite generates the same files at test time.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.bad_inputs import all_inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="output folder (created)")
    args = parser.parse_args(argv)
    from hybrid_unet.cli import output_dir_problem

    problem = output_dir_problem(args.dest, "dest")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    index = []
    for kind, expected, bad in all_inputs():
        dest = args.dest / re.sub(r"[^a-zA-Z0-9]+", "_", f"{kind}__{bad.name}").strip("_")
        dest.mkdir(parents=True, exist_ok=True)
        index.append({"kind": kind, "variant": bad.name, "expected": expected, "dir": str(dest),
                      "train_args": bad.build(dest), "error_names": bad.named(dest)})  # fmt: skip
    (args.dest / "index.json").write_text(json.dumps(index, indent=1))
    print(f"{len(index)} bad inputs of {len({i['kind'] for i in index})} kinds in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
