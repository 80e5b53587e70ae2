"""Run the reliability suite and print what was tried, what was expected and what happened.

Usage::

    python scripts/reliability_report.py [--json report.json] [-- extra pytest args]

Runs ``pytest tests/reliability -m reliability`` with the suite's report hook on
(``RELIABILITY_REPORT``), then prints one table row per fault or bad-input kind: the
expected behaviour, what the tests observed, the number of cases tried and pass/FAIL.
Exits with pytest's status, so CI can run this instead of plain pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ["fault", "bad input", "bad input (prediction)", "config", "security", "determinism"]


def run_suite(report: Path, extra: list[str]) -> tuple[int, float]:
    env = {**os.environ, "RELIABILITY_REPORT": str(report)}
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-m", "reliability", "-q",
           "-p", "no:cacheprovider", *extra]  # fmt: skip
    start = time.perf_counter()
    code = subprocess.call(cmd, cwd=REPO, env=env)
    return code, time.perf_counter() - start


def rows(records: list[dict]) -> list[dict]:
    """One row per (kind, name): outcomes, observations and cases summed over its tests."""
    table: dict[tuple[str, str], dict] = {}
    for rec in records:
        kind, name, expected = rec["row"] or ("(no row)", rec["nodeid"], "")
        row = table.setdefault((kind, name), {"kind": kind, "name": name, "expected": expected,
                                              "cases": 0, "outcomes": [], "observed": [],
                                              "seconds": 0.0})  # fmt: skip
        row["cases"] += rec["cases"] or 1
        row["outcomes"].append(rec["outcome"])
        row["seconds"] += rec["seconds"]
        note = rec["error"] if rec["outcome"] == "failed" else rec["observed"]
        if note and len(row["observed"]) < 3:
            row["observed"].append(note)
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(table.values(), key=lambda r: order.get(r["kind"], len(KINDS)))


def result(outcomes: list[str]) -> str:
    if "failed" in outcomes:
        return "FAIL"
    return "pass" if "passed" in outcomes else "skipped"


def markdown(table: list[dict]) -> str:
    lines = ["| # | kind | fault or bad input | expected | what happened | cases | result |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, row in enumerate(table, 1):
        seen = "; ".join(row["observed"]).replace("|", "/")
        if len(seen) > 160:
            seen = seen[:157] + "..."
        lines.append(f"| {i} | {row['kind']} | {row['name']} | {row['expected']} | {seen} | "
                     f"{row['cases']} | {result(row['outcomes'])} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also keep the per-test records here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = args.json or Path(tmp) / "reliability.json"
        code, seconds = run_suite(report, args.pytest_args)
        records = json.loads(report.read_text()) if report.exists() else []
    table = rows(records)
    print()
    print(markdown(table))
    count = {k: sum(1 for r in table if r["kind"] == k) for k in KINDS}
    cases = sum(r["cases"] for r in table)
    failed = sum(1 for r in table if result(r["outcomes"]) == "FAIL")
    bad = count["bad input"] + count["bad input (prediction)"]
    print(f"\n{count['fault']} fault kinds, {bad} bad-input kinds, "
          f"{len(table)} rows, {cases} cases, {failed} failing rows; suite {seconds:.0f} s.")  # fmt: skip
    return code


if __name__ == "__main__":
    raise SystemExit(main())
