"""Fixtures for driving the ``moonbus`` command line as a user would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from moonbus.cli import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

Invoke = Callable[..., Result]


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


@pytest.fixture
def moonbus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """``moonbus(*args)`` runs the CLI in-process (cwd: a fresh tmp dir) and returns the result."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str | Path) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def lua(tmp_path: Path) -> Callable[[str, str], Path]:
    """``lua(name, text)`` writes a script into tmp_path/scripts and returns its path."""

    def write(name: str, text: str) -> Path:
        folder = tmp_path / "scripts"
        folder.mkdir(exist_ok=True)
        path = folder / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def summary_of(moonbus: Invoke, tmp_path: Path) -> Callable[..., tuple[Result, Any]]:
    """``summary_of(*args)``: run with --summary into tmp and return (result, summary)."""
    counter = iter(range(1_000_000))

    def run(*args: str | Path) -> tuple[Result, Any]:
        out = tmp_path / f"summary-{next(counter)}.json"
        result = moonbus("run", *args, "--summary", out, "-q")
        return result, (json.loads(out.read_text("utf-8")) if out.exists() else None)

    return run

