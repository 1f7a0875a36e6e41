"""Benchmark: what the sandbox's time limit costs on pure-Lua code and on
pattern matching.

Row "time limit on a pure-Lua loop" runs the same loop three ways, interleaved
in one process so that they share the machine's state:

* in a sandbox engine with no limit (``limit=None``: no watchdog);
* in a sandbox engine with our limit armed (the watchdog thread holds the
  deadline and installs a hook only when it passes, so a call that finishes
  in time runs without any hook);
* in a raw lupa ``LuaRuntime`` with the common approach: a ``debug.sethook``
  count hook that runs every 1000 instructions and checks a deadline.

It reports our overhead over no limit (target: at most 10%) and the count
hook's time relative to ours.

Row "pattern matching, common patterns: sandbox vs raw Lua" runs a mix of
everyday string.find / match / gmatch / gsub calls on chat-sized lines in a
sandbox engine (where patterns.lua checks each call and hands it to the C
function when it is provably short) and in a raw lupa runtime with the
unwrapped C functions, and reports raw time / sandbox time.

Row "pattern matching, slowest C call the dispatcher allows" is the
calibration behind patterns.lua's budget: for patterns whose backtracking
makes the most of each counted step, it builds the worst subject of the
longest length the dispatcher still hands to C, times the raw C call, and
reports the slowest (target: a few milliseconds, within the watchdog's
reaction time).

Times are CPU seconds of the whole process
(``time.process_time``, best of several interleaved runs): they include the
watchdog thread's work, and unlike wall-clock time they do not grow when
other processes compete for the machine. The engines are made and closed here; nothing
is shared with other suites. Single-threaded apart from the watchdog.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from importlib import resources
from typing import Any

from moonbus.bench.harness import BenchRow, ratio_row
from moonbus.lua.sandbox import SandboxFactory

__all__ = ["run"]

AREA = "sandbox"
HOOK_EVERY = 1000
MAX_OVERHEAD = 0.10

LOOP = """
local n = ...
local acc = 0
for i = 1, n do
  acc = (acc + i * 3) % 1000003
end
return acc
"""

# Everyday pattern calls on lines a game script sees (commands, chat, logs).
PATTERNS = """
local rounds = ...
local lines = {
  "player Steve joined the game at 2024-05-01 12:30",
  "  /give   Alex  diamond_sword 1  ",
  "speed = 12.5",
  "The quick brown fox jumps over the lazy dog, 42 times!",
}
local acc = 0
for _ = 1, rounds do
  for i = 1, #lines do
    local s = lines[i]
    if s:find("joined", 1, true) then acc = acc + 1 end
    local k, v = s:match("^(%w+)%s*=%s*(.-)$")
    if k then acc = acc + #v end
    local _, _, d = s:match("(%d+)-(%d+)-(%d+)")
    if d then acc = acc + #d end
    local _, n = s:gsub("%s+", " ")
    acc = acc + n
    for w in s:gmatch("%a+") do acc = acc + #w end
    acc = acc + (s:find("%d+") or 0)
    acc = acc + #(s:gsub("[^%w]", ""))
    local cmd, rest = s:match("^%s*/(%S+)%s*(.*)$")
    if cmd then acc = acc + #rest end
  end
end
return acc
"""
MIN_PATTERN_RATIO = 0.7

# (function, pattern, replacement, worst subject of length n) for the row
# "slowest C call": shapes where a counted step costs the most.
SLOW_SHAPES: list[tuple[str, str, str | None, Callable[[int], str]]] = [
    ("find", "(" * 31 + "a" + ")" * 31 + "b", None, lambda n: "a" * n),
    ("find", "()" * 32 + "x", None, lambda n: "a" * n),
    ("find", "a?" * 8 + "a" * 8 + "b", None, lambda n: "a" * n),
    ("find", "%a*%d", None, lambda n: "a" * n),
    ("find", "." * 300 + "b", None, lambda n: "a" * n),
    ("find", "[a]" * 300 + "b", None, lambda n: "a" * n),
    ("find", "%s+x", None, lambda n: " " * n),
    ("find", ".-b", None, lambda n: "a" * n),
    ("find", "ab", None, lambda n: "a" * n),
    ("match", "^%s*(.-)%s*$", None, lambda n: "a" + " " * max(0, n - 2) + "b"),
    ("find", "%b()", None, lambda n: "(" * n),
    ("gsub", "", "-", lambda n: "a" * n),
    ("gsub", "x*", "-", lambda n: "a" * n),
    ("gmatch", "%a-b", None, lambda n: "a" * n),
]
MAX_SLOWEST_MS = 5.0

# The peer's hook, as scripts and hosts commonly write it.
HOOK_SETUP = f"""
local limit = ...
local clock, error = os.clock, error
local deadline = clock() + limit
debug.sethook(function()
  if clock() > deadline then
    error("time limit exceeded")
  end
end, "", {HOOK_EVERY})
"""


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """CPU seconds of the whole process (the watchdog thread's included)."""
    start = time.process_time()
    result = call()
    return time.process_time() - start, result


def _slowest_row(factory: SandboxFactory, quick: bool) -> BenchRow:
    """Time raw C calls at the longest subjects the dispatcher hands to C."""
    lupa = factory.lua_module
    lua_dir = resources.files("moonbus.lua")
    dispatcher = lupa.LuaRuntime(register_eval=False, register_builtins=False)
    items = dispatcher.execute(lua_dir.joinpath("pcompile.lua").read_text("utf-8"))
    boundary = dispatcher.execute(lua_dir.joinpath("pboundary.lua").read_text("utf-8"))
    port = dispatcher.execute(lua_dir.joinpath("pmatch.lua").read_text("utf-8"), items, boundary)
    cost = dispatcher.execute(lua_dir.joinpath("pcost.lua").read_text("utf-8"), port)
    info = dispatcher.execute(lua_dir.joinpath("patterns.lua").read_text("utf-8"), port, cost)
    raw = lupa.LuaRuntime(register_eval=False, register_builtins=False)
    call = raw.execute(
        "return function(f, s, p, r) if f == 'gmatch' then return string.gmatch(s, p)() end"
        " return string[f](s, p, r) end"
    )
    repeats = 2 if quick else 5
    slowest, worst = 0.0, ""
    for fname, pattern, repl, subject in SLOW_SHAPES:
        n = int(info.threshold(fname, pattern, None if repl is None else len(repl)))
        if n < 1:
            continue
        args = (fname, subject(n), pattern, repl)
        seconds = min(_timed(partial(call, *args))[0] for _ in range(repeats))
        if seconds > slowest:
            slowest, worst = seconds, f"{fname} {pattern[:16]!r} on {n:,} bytes"
    milliseconds = slowest * 1000
    return BenchRow(
        area=AREA,
        name="pattern matching, slowest C call the dispatcher allows",
        value=milliseconds,
        unit="ms CPU",
        target=f"≤ {MAX_SLOWEST_MS:g} ms",
        ok=milliseconds <= MAX_SLOWEST_MS,
        note=f"budget {int(info.budget):,} steps; slowest: {worst}; best of {repeats}",
    )


def _pattern_row(factory: SandboxFactory, quick: bool) -> BenchRow:
    """Common pattern calls: sandbox engine vs a raw runtime, interleaved."""
    rounds = 200 if quick else 20_000
    repeats = 3 if quick else 7
    engine = factory.create("bench-patterns")
    try:
        ours = engine.compile(PATTERNS, "bench_patterns.lua", engine.new_env())
        raw = factory.lua_module.LuaRuntime(register_eval=False, register_builtins=False)
        theirs = raw.execute("return function(...) " + PATTERNS + " end")
        best = {"ours": float("inf"), "raw": float("inf")}
        results = set()
        for _ in range(repeats):
            seconds, result = _timed(lambda: engine.call(ours, rounds, limit=60.0)[0])
            best["ours"] = min(best["ours"], seconds)
            results.add(result)
            seconds, result = _timed(lambda: theirs(rounds))
            best["raw"] = min(best["raw"], seconds)
            results.add(result)
        if len(results) != 1:
            raise RuntimeError(f"pattern benchmark results differ: {sorted(results)}")
    finally:
        engine.close()
    return ratio_row(
        AREA,
        "pattern matching, common patterns: sandbox vs raw Lua",
        ours=best["ours"],
        peer="raw lupa runtime, C string functions",
        theirs=best["raw"],
        unit="s CPU",
        higher_is_better=False,
        min_ratio=MIN_PATTERN_RATIO,
        target=f"≥ {MIN_PATTERN_RATIO} (sandbox within {1 / MIN_PATTERN_RATIO:.2f}x of raw)",
        note=f"8 calls x 4 lines x {rounds:,} rounds, best of {repeats}",
    )


def run(quick: bool) -> list[BenchRow]:
    """Measure the three variants; ``quick`` shrinks the loop for tests."""
    iterations = 300_000 if quick else 20_000_000
    repeats = 3 if quick else 7
    limit = 60.0  # far beyond the loop's run time: armed, never fires

    with SandboxFactory() as factory:
        pattern_row = _pattern_row(factory, quick)
        slowest_row = _slowest_row(factory, quick)
        engine = factory.create("bench-sandbox")
        try:
            loop = engine.compile(LOOP, "bench_loop.lua", engine.new_env())
            lupa = factory.lua_module
            peer = lupa.LuaRuntime(register_eval=False, register_builtins=False)
            peer_loop = peer.execute("return function(...) " + LOOP + " end")
            setup = peer.execute("return function(...) " + HOOK_SETUP + " end")
            clear = peer.execute("return function() debug.sethook() end")

            def hooked() -> Any:
                setup(limit)
                try:
                    return peer_loop(iterations)
                finally:
                    clear()

            variants: dict[str, Callable[[], Any]] = {
                "none": lambda: engine.call(loop, iterations, limit=None)[0],
                "ours": lambda: engine.call(loop, iterations, limit=limit)[0],
                "hook": hooked,
            }
            best = {name: float("inf") for name in variants}
            expected: Any = None
            for _ in range(repeats):
                for name, call in variants.items():
                    seconds, result = _timed(call)
                    if expected is None:
                        expected = result
                    elif result != expected:
                        raise RuntimeError(
                            f"benchmark variant {name!r} computed {result!r}, not {expected!r}"
                        )
                    best[name] = min(best[name], seconds)
        finally:
            engine.close()

    overhead = best["ours"] / best["none"] - 1.0
    loop_note = f"{iterations:,} iterations, best of {repeats}"
    return [
        ratio_row(
            AREA,
            "time limit on a pure-Lua loop",
            ours=best["ours"],
            peer="same loop, no limit",
            theirs=best["none"],
            unit="s CPU",
            higher_is_better=False,
            min_ratio=1.0 / (1.0 + MAX_OVERHEAD),
            target="≤ 10% over no limit",
            note=f"overhead {overhead * 100:+.1f}%; {loop_note}",
        ),
        ratio_row(
            AREA,
            "time limit on a pure-Lua loop vs count hook",
            ours=best["ours"],
            peer=f"debug.sethook count hook every {HOOK_EVERY} instructions",
            theirs=best["hook"],
            unit="s CPU",
            higher_is_better=False,
            min_ratio=None,
            target="report (ratio > 1: the hook is slower)",
            note=loop_note,
        ),
        pattern_row,
        slowest_row,
    ]


if __name__ == "__main__":
    for row in run(quick=False):
        print(row)
