"""The public surface: sorted re-exports, typed package, no hidden singletons."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

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
