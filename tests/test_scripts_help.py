"""Every script's ``--help`` opens with a whole sentence (argparse shows the docstring's first
line): benchmark_step.py's was cut in the middle of its usage example."""

from __future__ import annotations

import ast

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "scripts").glob("*.py")))
def test_help_description_is_a_whole_sentence(script):
    source = (REPO / "scripts" / script).read_text()
    first = ast.get_docstring(ast.parse(source), clean=False).splitlines()[0]
    assert first.rstrip().endswith((".", "?")) and first.count("``") % 2 == 0, first
