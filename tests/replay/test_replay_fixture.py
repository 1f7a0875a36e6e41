"""The test kit's ``moonbus_replay`` fixture: a recording as a regression test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from replay_support import Record, write


def test_an_unchanged_script_replays_identically(
        moonbus_replay: Any, record: Record, scripts: dict[str, Path]) -> None:
    path = record([scripts["probe"], scripts["walker"]], ticks=24)
    result = moonbus_replay(path)
    assert result.identical
    assert moonbus_replay(path, scripts={"probe": scripts["probe"]}).identical


def test_a_changed_script_fails_the_test_with_the_divergence_report(
        moonbus_replay: Any, record: Record, scripts: dict[str, Path], tmp_path: Path) -> None:
    path = record([scripts["probe"], scripts["walker"]], ticks=24)
    changed = write(tmp_path, "probe_v2.lua",
                    scripts["probe"].read_text().replace("STEP = 3", "STEP = 4"))
    with pytest.raises(pytest.fail.Exception) as failed:
        moonbus_replay(path, scripts={"probe": changed})
    report = str(failed.value)
    assert f"replay of {path} diverged" in report
    assert "script probe" in report and '"step": 16' in report
