"""The public surface: sorted re-exports, typed package, no hidden singletons."""

from __future__ import annotations

import importlib
import pkgutil
import re
import tomllib
from pathlib import Path
from typing import Any

import moonbus


def test_all_is_sorted_and_complete() -> None:
    assert moonbus.__all__ == sorted(moonbus.__all__)
    for name in moonbus.__all__:
        assert hasattr(moonbus, name), name


def test_spec_entry_points_are_public() -> None:
    for name in ("Bus", "SharedStore", "Runtime", "Runner"):
        assert name in moonbus.__all__


def test_package_is_typed() -> None:
    assert (Path(moonbus.__file__).parent / "py.typed").is_file()


def test_every_module_imports() -> None:
    for info in pkgutil.walk_packages(moonbus.__path__, "moonbus."):
        importlib.import_module(info.name)


ROOT = Path(__file__).resolve().parents[1]
# What a module or a build product is; every other file in the package is data
# that must ship in the wheel.
NOT_DATA = {".py", ".pyc", ".c", ".h", ".so"}


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_every_data_file_matches_a_package_data_glob() -> None:
    """The fast half of tests/test_wheel_install.py: setuptools' package-data
    globs (recursive since setuptools 62.3) cover every data file, so a new one
    of a new kind fails here before a wheel is built without it."""
    src = ROOT / "src" / "moonbus"
    globs = _pyproject()["tool"]["setuptools"]["package-data"]["moonbus"]
    matched = {p for pattern in globs for p in src.glob(pattern) if p.is_file()}
    data = {p for p in src.rglob("*") if p.is_file() and p.suffix not in NOT_DATA
            and "__pycache__" not in p.parts}
    assert data, "no data files found: is this the source tree?"
    assert sorted(str(p.relative_to(src)) for p in data - matched) == []


def test_license_file_and_metadata_agree() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text("utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the moonbus authors" in text


def test_the_version_has_one_source() -> None:
    config = _pyproject()
    assert "version" in config["project"]["dynamic"]
    dynamic = config["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "moonbus.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", moonbus.__version__)
