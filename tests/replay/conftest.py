"""Fixtures for the record/replay tests (helpers: replay_support)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from replay_support import PROBE, WALKER, Record, write

from moonbus.app import load_app
from moonbus.session.plan import plan_scripts
from moonbus.session.session import Session


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "scripts"
    folder.mkdir()
    return {"probe": write(folder, "probe.lua", PROBE),
            "walker": write(folder, "walker.lua", WALKER)}


@pytest.fixture
def record(tmp_path: Path) -> Record:
    """``record(paths, ticks=..., tick_ms=0, app=None, seed=7)`` runs a session with
    ``--record`` and returns the recording's path."""
    count = [0]

    def run(paths: Sequence[str | Path], *, ticks: int = 60, tick_ms: int = 0,
            app: str | None = None, seed: int = 7, **options: Any) -> Path:
        count[0] += 1
        out = tmp_path / f"run{count[0]}.mbrec"
        plans = plan_scripts(tuple(str(p) for p in paths), ())
        virtual = tick_ms == 0
        session = Session(plans, seed=seed, app=load_app(app), virtual=virtual,
                          tick_seconds=0.6 if virtual else tick_ms / 1000, record=out, **options)
        try:
            session.start()
            try:
                if virtual:
                    session.run_virtual(ticks, threading.Event())
                else:
                    session.run_realtime(ticks, threading.Event(), progress_every=0.05)
            finally:
                session.stop_scripts()
        finally:
            session.close()
        return out

    return run
