"""``locate`` (custom ``_target_`` and dotted model parts) tells a missing name from a module
that exists but fails to import, and says why it failed."""

from __future__ import annotations

import sys

import pytest

from hybrid_unet.config.validate import locate, target_problems


@pytest.fixture
def ext_modules(tmp_path, monkeypatch):
    """``broken_import`` imports a package that is not installed; ``good_ext`` is fine."""
    (tmp_path / "broken_import.py").write_text("import nonexistent_pkg_xyz\n\nclass L:\n    pass\n")
    (tmp_path / "raising_ext.py").write_text("raise RuntimeError('set MY_KEY first')\n")
    (tmp_path / "good_ext.py").write_text("class Mixer:\n    def __init__(self, dim):\n"
                                          "        self.dim = dim\n")  # fmt: skip
    (tmp_path / "two_args_ext.py").write_text("class TwoArgs:\n    def __init__(self, dim, heads):"
                                              "\n        pass\n")  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("broken_import", "raising_ext", "good_ext", "two_args_ext"):
        sys.modules.pop(name, None)


def test_a_target_whose_module_fails_to_import_names_the_cause(ext_modules):
    problems = target_problems({"_target_": "broken_import.L"}, "loss")
    assert len(problems) == 1
    assert problems[0].startswith("config key 'loss._target_': cannot import 'broken_import.L'")
    assert "No module named 'nonexistent_pkg_xyz'" in problems[0]


def test_a_module_raising_while_imported_names_the_error(ext_modules):
    with pytest.raises(ImportError, match="RuntimeError: set MY_KEY first"):
        locate("raising_ext.Thing")


def test_missing_names_are_none_and_present_ones_found(ext_modules):
    assert locate("good_ext.Mixer").__name__ == "Mixer"
    assert locate("good_ext.Mixr") is None
    assert locate("no_such_module_abc.Thing") is None
    assert locate("hybrid_unet.losses.compound.DiceCELoss").__name__ == "DiceCELoss"
    assert target_problems({"_target_": "no_such_module_abc.Thing"}, "loss") == [
        "config key 'loss._target_': cannot import 'no_such_module_abc.Thing'"
    ]


def test_a_misspelt_dotted_attention_is_refused_at_start_up_naming_the_key(ext_modules, tmp_path):
    from tests.config.test_startup_checks import problems

    found = problems(["model.attention=good_ext.Mixr", "model.shuffle_attention=good_ext.Mixer"],
                     tmp_path)  # fmt: skip
    assert found == [
        "config key 'model.attention': cannot import 'good_ext.Mixr' (did you mean "
        "'good_ext.Mixer'?)"
    ]
    found = problems(["model.shuffle_attention=broken_import.L"], tmp_path)
    assert len(found) == 1 and found[0].startswith("config key 'model.shuffle_attention'")
    assert "nonexistent_pkg_xyz" in found[0]
    # a class that is not built as cls(channels): it failed inside the model, naming HybridUNet
    assert problems(["model.attention=two_args_ext.TwoArgs"], tmp_path) == [
        "config key 'model.attention': 'two_args_ext.TwoArgs' is built as cls(channels), but "
        "missing a required argument: 'heads'"
    ]


def test_the_model_names_its_key_for_a_dotted_part_it_cannot_import(ext_modules):
    from hybrid_unet.models.blocks.hybrid import make_skip_attention, token_mixer_factory

    with pytest.raises(ValueError, match=r"^model.attention 'good_ext.Mixr': cannot import it "):
        token_mixer_factory("good_ext.Mixr", 4, None)
    assert make_skip_attention("good_ext.Mixer", 8).dim == 8
