"""A built C fast path must take the work it is for (DESIGN.md rule 12).

The C paths hand anything unusual back to the Python reference path, which
gives the same results; so a C path that silently hands back *everything*
(a renamed field it reads by name, a changed lupa) leaves every behaviour
test green. These tests count instead: a plain emit of a dict of scalars to
a script handler must be committed by the C emit core and delivered by the C
delivery, in immediate and deferred delivery, and a payload the C delivery
cannot copy must be handed back and counted. Skipped when the extensions are
not built, except under ``CI=true`` (CI builds them: a missing build fails).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonbus.native import FAST_PATH_MODULES, FastPathStatistics, fast_paths, load_fast_path
from moonbus.runtime import Runtime

SCRIPT = """
local total = 0
events:on("hit", function(e) total = total + e.x; stats.set("total", total) end)
"""


def _built() -> tuple[bool, str]:
    tested = ("moonbus.bus._fastemit", "moonbus.lua._fastcall")
    missing = [p for p in fast_paths() if p.name in tested and not p.on]
    return not missing, "; ".join(f"{p.name}: {p.reason}" for p in missing)


@pytest.fixture(autouse=True)
def _needs_the_build() -> None:
    built, why = _built()
    if built:
        return
    if os.environ.get("CI") == "true" and not os.environ.get("MOONBUS_PURE_PYTHON"):
        pytest.fail(f"CI builds the C fast paths, but they are off: {why}")
    pytest.skip(f"C fast paths off: {why}")


@pytest.fixture(params=["immediate", "deferred"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    # The real clock: a test clock sends deliveries to the Python path by design.
    rt = Runtime(threaded=False, event_delivery=request.param)
    try:
        yield rt
    finally:
        rt.close()


def _delta(rt: Runtime, before: FastPathStatistics) -> FastPathStatistics:
    now = rt.fast_path_statistics()
    return FastPathStatistics(
        emits_taken=now.emits_taken - before.emits_taken,
        emits_handed_back=now.emits_handed_back - before.emits_handed_back,
        deliveries_taken=now.deliveries_taken - before.deliveries_taken,
        deliveries_handed_back=now.deliveries_handed_back - before.deliveries_handed_back,
    )


def _started(rt: Runtime) -> None:
    rt.load("hit.lua", name="hit", text=SCRIPT).start()
    rt.bus.emit("hit", {"x": 0})  # the first emit of a type caches its route (Python path)
    assert rt.flush_events(10)


def test_plain_events_are_taken_by_c(runtime: Runtime) -> None:
    _started(runtime)
    before = runtime.fast_path_statistics()
    for i in range(20):
        runtime.bus.emit("hit", {"x": 1, "who": "a", "big": i * 1.5, "ok": True})
    assert runtime.flush_events(10)
    done = _delta(runtime, before)
    assert done == FastPathStatistics(emits_taken=20, deliveries_taken=20), done
    assert runtime.script("hit").stats["total"] == 20
    bus = runtime.bus.statistics()
    assert bus.c_emits_taken >= 20 and bus.c_emits_handed_back >= 1  # the warm-up emit


def test_what_c_cannot_copy_is_handed_back_and_counted(runtime: Runtime) -> None:
    _started(runtime)
    before = runtime.fast_path_statistics()
    runtime.bus.emit("hit", {"x": 2, "nested": [1, 2, 3]})  # nested: both C paths hand back
    assert runtime.flush_events(10)
    done = _delta(runtime, before)
    assert done == FastPathStatistics(emits_handed_back=1, deliveries_handed_back=1), done
    assert runtime.script("hit").stats["total"] == 2  # the Python path ran it


def test_the_python_path_counts_nothing(tmp_path: Path) -> None:
    with Runtime(threaded=False, native=False) as rt:
        _started(rt)
        rt.bus.emit("hit", {"x": 1})
        assert rt.fast_path_statistics() == FastPathStatistics()


def test_the_loader_says_why_a_path_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(load_fast_path(name).on for name in FAST_PATH_MODULES[:2])
    off = load_fast_path("moonbus.bus._fastemit", native=False)
    assert off.module is None and "native=False" in off.reason
    monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1")
    assert load_fast_path("moonbus.lua._fastcall").reason == "MOONBUS_PURE_PYTHON=1"
    assert load_fast_path("moonbus.bus._fastemit", env=False).on  # import-time types
    monkeypatch.delenv("MOONBUS_PURE_PYTHON")
    monkeypatch.setattr("sys._is_gil_enabled", lambda: False, raising=False)
    ft = load_fast_path("moonbus.lua._fastcall")
    assert ft.module is None and ft.reason.startswith("free-threaded interpreter")
    monkeypatch.undo()
    assert "not importable" in load_fast_path("moonbus.bus._no_such_extension").reason

