"""Script-host benchmarks: data a host API returns, copied into Lua.

Rows (each measured side by side with its peer in the same run, interleaved
rounds, best of each; CPU time of the measuring thread, which runs the script
in a stepped runtime, so other processes on a loaded machine do not count):

* a host API method returning 30 dicts of six scalars (an entity query:
  ``find_all``, ``npcs``, an inventory), called from a script that reads
  every field, per call; against raw lupa copying the same list with
  ``table_from(data, recursive=True)`` (the copy alone, no call, no read).
  The C call and conversion (``moonbus.lua.fastconvert``: ``quick_invoke``
  calls the method and builds the list on the script's stack) are what this
  row measures;
* the same call on the pure-Python path (``Runtime(native=False)``), the
  reference for the row above;
* a host API method returning 30 ``@lua_api`` entity objects (proxies), read
  by the script, C path against the pure-Python path.
"""

from __future__ import annotations

import time
from dataclasses import replace

from moonbus.bench.harness import BenchRow, ratio_row
from moonbus.lua.exposure import lua_api
from moonbus.lua.fastconvert import native_convert_available
from moonbus.runtime import Runtime

__all__ = ["run"]

AREA = "host"
ROWS = [
    {"id": i, "name": f"goblin {i}", "x": 3200 + i, "y": 3100 - i, "hp": 7.5 + i,
     "alive": i % 3 != 0}
    for i in range(30)
]
READ_DICTS = """
function poll()
  local s = 0
  for i = 1, {n} do
    local found = world:{method}()
    for j = 1, #found do
      local e = found[j]
      s = s + e.id + e.x + e.y + e.hp + #e.name + (e.alive and 1 or 0)
    end
  end
  total = s
  return 1000
end
"""
READ_OBJECTS = READ_DICTS.replace(
    "s = s + e.id + e.x + e.y + e.hp + #e.name + (e.alive and 1 or 0)", "s = s + e:id()"
)


@lua_api
class _Goblin:
    def __init__(self, ident: int) -> None:
        self._id = ident

    def id(self) -> int:
        return self._id


@lua_api
class _World:
    """Returns the same list every call, as a game's cached query result would."""

    def __init__(self) -> None:
        self._goblins = [_Goblin(i) for i in range(30)]

    def find_all(self) -> list[dict[str, object]]:
        return ROWS

    def goblins(self) -> list[_Goblin]:
        return self._goblins


class _Stepped:
    """A stepped runtime running one script whose ``poll`` makes ``n`` calls;
    ``round()`` runs one poll on this thread (the virtual clock moves past its
    1 s delay) and returns CPU microseconds per call. The same script (and Lua
    state) runs every round, as a game's script runs frame after frame."""

    def __init__(self, text: str, n: int, *, native: bool) -> None:
        self._now = 0.0
        self._n = n
        self.rt = Runtime(threaded=False, clock=lambda: self._now, native=native)
        self.rt.register_api("world", _World())
        self._host = self.rt.load("bench_hostdata.lua", text=text)
        self._host.start()
        self.round()  # the first poll warms the state up

    def round(self) -> float:
        self._now += 10.0
        start = time.thread_time()
        ran = self.rt.run_due(self._now)
        elapsed = time.thread_time() - start
        if not ran or self._host.status != "running" or self._host.errors:
            raise RuntimeError(f"host data benchmark failed: {self._host.errors[-1:]}")
        return elapsed / self._n * 1e6


def _raw_us(n: int) -> float:
    import lupa.lua54 as lua

    table_from = lua.LuaRuntime().table_from
    table_from(ROWS, recursive=True)  # warm, as the scripts' state is
    start = time.thread_time()
    for _ in range(n):
        table_from(ROWS, recursive=True)
    return (time.thread_time() - start) / n * 1e6


def run(quick: bool) -> list[BenchRow]:
    """The host-data rows; ``quick`` shrinks every workload."""
    # Batches long enough that the caches each batch starts with (the other
    # paths ran in between) weigh little: ~1,000 calls of each.
    n = 50 if quick else 1_000
    rounds = 2 if quick else 12
    dicts = READ_DICTS.format(n=n, method="find_all")
    objects = READ_OBJECTS.format(n=n, method="goblins")
    ours = raw = python_path = objects_c = objects_python = float("inf")
    runs = [_Stepped(dicts, n, native=True), _Stepped(dicts, n, native=False),
            _Stepped(objects, n, native=True), _Stepped(objects, n, native=False)]
    try:
        for _ in range(rounds):  # interleaved rounds, best of each
            ours = min(ours, runs[0].round())
            raw = min(raw, _raw_us(n))
            python_path = min(python_path, runs[1].round())
            objects_c = min(objects_c, runs[2].round())
            objects_python = min(objects_python, runs[3].round())
    finally:
        for stepped in runs:
            stepped.rt.close()
    path = ("C conversion" if native_convert_available()
            else "pure-Python path (C conversion not built)")
    row = ratio_row(
        AREA, "host API -> 30 six-field dicts, read by the script", ours=ours,
        peer="raw lupa table_from(recursive=True), copy only", theirs=raw, unit="us CPU/call",
        higher_is_better=False, min_ratio=3.0, target="<= 15 us/call, >= 3x raw lupa",
        note=f"{path}; ours includes the call from Lua and reading all 180 fields",
    )
    return [
        replace(row, ok=bool(row.ok) and ours <= 15.0),
        ratio_row(
            AREA, "host API -> 30 six-field dicts (pure-Python path)", ours=python_path,
            peer="raw lupa table_from(recursive=True), copy only", theirs=raw,
            unit="us CPU/call", higher_is_better=False, min_ratio=None,
            target="reference (no target): Runtime(native=False)",
        ),
        ratio_row(
            AREA, "host API -> 30 @lua_api objects, one method call each", ours=objects_c,
            peer="pure-Python path (Runtime(native=False))", theirs=objects_python,
            unit="us CPU/call", higher_is_better=False, min_ratio=None,
            target="reference (no target): proxies are made by the prelude either way",
            note=f"{path}; includes 30 method calls on the proxies",
        ),
    ]
