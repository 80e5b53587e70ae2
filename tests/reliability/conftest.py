"""The reliability suite: every test is marked ``reliability`` and names its row of the report.

``@pytest.mark.row(kind, name, expected)`` puts a test in a row of the table printed by
``scripts/reliability_report.py`` (``kind``: fault, bad input, config, security, determinism);
the ``observe`` fixture records what happened and how many cases a test tried. With
``RELIABILITY_REPORT=<file.json>`` set, one JSON record per test is written there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_RECORDS: list[dict] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "row(kind, name, expected): the reliability-report row a test belongs to"
    )


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


class Observation:
    """What a test saw: a short sentence and the number of cases it tried."""

    def __init__(self, node: pytest.Item) -> None:
        self.node = node
        self.cases = 0
        self.notes: list[str] = []

    def __call__(self, note: str, cases: int = 1) -> None:
        self.notes.append(note)
        self.cases += cases
        self.node.user_properties[:] = [
            p for p in self.node.user_properties if p[0] not in ("observed", "cases")
        ]
        self.node.user_properties += [("observed", "; ".join(self.notes)), ("cases", self.cases)]


@pytest.fixture
def observe(request) -> Observation:
    """Call ``observe("what happened", cases=n)`` once per checked case or group of cases."""
    return Observation(request.node)


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not os.environ.get("RELIABILITY_REPORT"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        props = dict(report.user_properties)
        row = next((m for m in getattr(report, "row_marker", [])), None)
        _RECORDS.append({
            "nodeid": report.nodeid,
            "outcome": report.outcome,
            "seconds": round(report.duration, 2),
            "row": row,
            "observed": props.get("observed", ""),
            "cases": props.get("cases", 0),
            "error": report.longreprtext.strip().splitlines()[-1] if report.failed else "",
        })  # fmt: skip


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("row")
    report.row_marker = [list(marker.args)] if marker else []


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("RELIABILITY_REPORT")
    if path and _RECORDS:
        Path(path).write_text(json.dumps(_RECORDS, indent=1))


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """The fault run (``harness.FAULT_RUN``) trained once without interruption."""
    from tests.reliability.harness import train

    run_dir = tmp_path_factory.mktemp("reference")
    train(run_dir)
    return run_dir
