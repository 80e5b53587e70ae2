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


def test_make_bad_inputs_into_a_file_is_one_error(tmp_path, capsys):
    """A dest that is (or lies under) a file ended in a NotADirectoryError traceback."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_bad_inputs",
                                                  REPO / "scripts" / "make_bad_inputs.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    taken = tmp_path / "notes.txt"
    taken.write_text("")
    assert module.main([str(taken / "bad")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: dest {taken / 'bad'} lies under the file {taken}, not a folder\n"
    )


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_to_dice_scores_every_checkpoint_of_a_run(tmp_path):
    """The curve mode called validate() with an argument it had lost (mirror=): every run of
    the README's time-to-Dice command ended in a traceback after its training."""
    from tests.helpers import train_in_process

    train_in_process(["trainer.max_epochs=2", "trainer.steps_per_epoch=1", "data.max_val_cases=1",
                      "trainer.checkpoint.every_n_epochs=1"], tmp_path)  # fmt: skip
    rows = _script("benchmark_time_to_dice").score_checkpoints("hybrid", tmp_path, None)
    assert len(rows) == 2 and all(0.0 <= r["mean_dice"] <= 1.0 for r in rows)
