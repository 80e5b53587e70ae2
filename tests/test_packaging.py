"""pyproject lists every package (conf/ ships inside the wheel as hybrid_unet.conf)."""

from __future__ import annotations

import pytest

from tests.helpers import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _declared() -> tuple[set[str], dict[str, str]]:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(setuptools["packages"]), setuptools["package-dir"]


def test_every_python_package_is_listed():
    packages, _ = _declared()
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "hybrid_unet").rglob("__init__.py")
    }
    assert found - packages == set(), "add these to [tool.setuptools] packages"


def test_every_config_group_ships_with_the_package():
    packages, package_dir = _declared()
    groups = [p for p in (REPO / "conf").iterdir() if p.is_dir() and p.name != "__pycache__"]
    for group in groups:
        name = f"hybrid_unet.conf.{group.name}"
        assert name in packages and package_dir.get(name) == f"conf/{group.name}", name
        assert (group / "__init__.py").exists(), f"{group} needs an __init__.py to ship"


@pytest.mark.parametrize(("command", "module"), [("crossval", "hybrid_unet.crossval"),
                                                 ("onnx-run", "hybrid_unet.inference.onnx_runner"),
                                                 ("evaluate", "hybrid_unet.evaluate")])  # fmt: skip
def test_the_image_entry_point_runs_each_documented_command(command, module):
    """docker/entrypoint.sh passed ``crossval`` on as a program name ("not found")."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("sh") is None:
        pytest.skip("no POSIX shell")
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    result = subprocess.run(["sh", str(REPO / "docker" / "entrypoint.sh"), command, "--help"],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PATH": path})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: python -m {module} ")
