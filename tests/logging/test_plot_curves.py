"""scripts/plot_curves.py reads runs' metrics.csv and draws (or names the missing extra)."""

from __future__ import annotations

import importlib.util

from tests.helpers import REPO

_spec = importlib.util.spec_from_file_location("plot_curves", REPO / "scripts" / "plot_curves.py")
plot_curves = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_curves)


def _run(tmp_path, name: str):
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.csv").write_text(
        "step,epoch,train_loss,mean_dice\n3,1,2.0,\n6,2,1.5,0.4\n9,3,1.2,0.5\n"
    )
    return run


def test_curves_are_read_per_step(tmp_path):
    curves = plot_curves.read_curves(_run(tmp_path, "a"))
    assert curves["train_loss"] == [(3, 2.0), (6, 1.5), (9, 1.2)]
    assert curves["mean_dice"] == [(6, 0.4), (9, 0.5)]


def test_main_draws_several_runs_or_names_the_missing_extra(tmp_path, capsys):
    out = tmp_path / "curves.png"
    code = plot_curves.main([str(_run(tmp_path, "a")), str(_run(tmp_path, "b")), "-o", str(out)])
    if importlib.util.find_spec("matplotlib") is None:
        assert code == 2 and "pip install matplotlib" in capsys.readouterr().err
    else:
        assert code == 0 and out.stat().st_size > 0
    assert plot_curves.main([str(tmp_path / "missing")]) == 2


def test_output_in_a_new_folder_is_written_and_a_bad_one_is_one_error(tmp_path, capsys):
    """``-o plots/curves.png`` (a folder not made yet) used to end in a traceback from
    matplotlib; so did a name without a picture suffix or under a file."""
    if importlib.util.find_spec("matplotlib") is None:
        return
    run = str(_run(tmp_path, "a"))
    out = tmp_path / "plots" / "curves.png"
    assert plot_curves.main([run, "-o", str(out)]) == 0 and out.stat().st_size > 0
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temporary left
    for bad in (tmp_path / "curves", tmp_path / "a" / "metrics.csv" / "c.png"):
        capsys.readouterr()
        assert plot_curves.main([run, "-o", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(bad) in err and "Traceback" not in err
