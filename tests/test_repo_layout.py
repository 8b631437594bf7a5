"""What a fresh clone needs: the core dependencies, and the shared data beside the checkout."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import SHARED, shared_path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_a_plain_install_pulls_neither_scikit_image_nor_openpyxl() -> None:
    core = _names(_project()["dependencies"])
    assert not core & {"scikit-image", "openpyxl"}, core
    extras = _project()["optional-dependencies"]
    assert "openpyxl" in _names(extras["annotations"]) & _names(extras["dev"])


def test_the_simulated_cameras_photograph_is_package_data() -> None:
    png = ROOT / "hil" / "sim" / "astronaut_grey.png"
    assert png.is_file() and png.stat().st_size < 150_000
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "*.png" in data["package-data"]["*"]


def test_shared_data_is_found_beside_the_checkout() -> None:
    assert ROOT.parent / "shared" == SHARED


def test_missing_shared_data_skips_locally_and_fails_in_ci(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-file"):
        shared_path("no-such-file")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-file"):
        shared_path("no-such-file")


def test_no_module_of_ours_shadows_the_standard_library() -> None:
    ours = [p for pkg in ("edge", "sensors", "hil", "models") for p in (ROOT / pkg).rglob("*.py")]
    names = {p.stem if p.stem != "__init__" else p.parent.name for p in ours}
    assert len(ours) > 50
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)
