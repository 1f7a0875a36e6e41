"""``c_deliver`` (``_fastcall.c``): script_env.lua's ``deliver`` steps done in C.

Issue 16: the C delivery runs the steps of the Lua ``deliver`` (handler
lookup, once removal from ``handlers`` and ``patterns``, tick/type/seq
unless present, ``delivering.seq``, the handler under the message handler)
itself when it finds the Lua function's ``handlers``, ``message_handler``,
``delivering`` and ``patterns`` upvalues (it keeps their values), and calls
the Lua function otherwise. These tests run the same events through the C
delivery and through the Lua ``deliver`` (the reference) on a copy of
script_env.lua's function (read from the shipped file), and compare what
each left behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from tests.lua.engine_lock_support import fast_module

import moonbus.host
from moonbus.lua.sandbox import SandboxFactory

SCRIPT_ENV = Path(moonbus.host.__file__).with_name("script_env.lua").read_text(encoding="utf-8")


def _deliver_source() -> str:
    """script_env.lua's own ``local function deliver`` (to its closing ``end``
    at the start of a line), so the reference is the shipped function."""
    start = SCRIPT_ENV.index("local function deliver(")
    end = SCRIPT_ENV.index("\nend\n", start) + len("\nend\n")
    return SCRIPT_ENV[start:end]


# script_env.lua's deliver, with what a test needs to look inside.
CHUNK = """
local handlers = {}
local patterns = { "hit", "hit", "hit" }
local delivering = { seq = false }
local message_handler = ...
local log = {}
handlers[1] = function(e) log[#log + 1] = {e.tick, e.type, e.seq, e.x, delivering.seq} end
handlers[2] = { fn = function(e) log[#log + 1] = {"once", e.seq} end }
handlers[3] = function(e) error("boom " .. e.seq) end
handlers[4] = function(e)
  local fields = {}
  for k, v in pairs(e) do
    fields[#fields + 1] = string.format("%q=%s", k, tostring(v))
  end
  table.sort(fields)
  log[#log + 1] = {table.concat(fields, " "), e.type}
end
""" + _deliver_source() + """
local function state()
  return log, handlers[2] ~= nil or patterns[2] ~= nil, delivering.seq
end
return deliver, state
"""


def _wire(source: str) -> Iterator[SimpleNamespace]:
    fast_module()
    with SandboxFactory() as factory:
        engine = factory.create("c-deliver")
        chunk = engine.compile(source, "deliver.lua", engine.new_env())
        deliver, state = engine.call(chunk, engine.message_handler, limit=5.0)
        seen = SimpleNamespace(engine=engine, deliver=deliver, state=state, failed=[],
                               fallback=[])
        seen.delivery = engine.native_delivery(
            deliver, fallback=lambda sub_id, event: seen.fallback.append(event),
            failed=lambda sub_id, result, failure, reason, limit: seen.failed.append(
                (sub_id, str(result[1]) if result else str(failure))),
            settings=SimpleNamespace(handler_timeout=5.0),
        )
        assert seen.delivery is not None
        try:
            yield seen
        finally:
            engine.close()


@pytest.fixture
def wired() -> Iterator[SimpleNamespace]:
    yield from _wire(CHUNK)


def _event(seq: int, tick: int | None, data: dict[str, Any] | None = None) -> tuple[Any, ...]:
    return ("hit", MappingProxyType(data or {}), seq, tick)


EVENTS = [(1, _event(1, 7, {"x": 1})), (1, _event(2, None, {"x": 2})),
          (1, _event(3, 8, {"tick": 100, "type": "own", "seq": 55, "x": 3})),
          (1, _event(4, 9, {"tick": None, "x": 4})),
          (2, _event(5, 1)), (2, _event(6, 1)), (9, _event(7, 1)), (3, _event(8, 1)),
          (1, _event(9, 2, {"x": 5})),
          # run_items reuses the type and first keys it passed last (push_cached):
          # types and keys that change, repeat, are long, empty or hold a NUL
          (4, ("a", MappingProxyType({"k1": 1, "k2": "x"}), 10, 1)),
          (4, ("b", MappingProxyType({"k2": 2, "k1": "y"}), 11, 1)),
          (4, ("a" * 50, MappingProxyType({"long" * 12: 1, "n\0ul": 2, "": 3, "k4": 4,
                                           "k5": 5}), 12, 1)),
          (4, ("a", MappingProxyType({"k1": 1}), 13, 1)),
          (4, ("a" * 50, MappingProxyType({"long" * 12: 6}), 14, 1))]


def _lua_reference() -> tuple[Any, ...]:
    # The same events through the Lua deliver, called as the Python path does.
    for seen in _wire(CHUNK):
        engine = seen.engine
        errors = []
        for sub_id, (kind, data, seq, tick) in EVENTS:
            table = engine.table(dict(data))
            ok, *rest = engine.call(seen.deliver, sub_id, table, tick, seq, kind, limit=5.0)
            if not ok:
                errors.append((sub_id, str(rest[0]).split("\n")[0]))
        return (*_state(seen), errors)
    raise AssertionError("not wired")


def _state(seen: SimpleNamespace) -> tuple[Any, ...]:
    log, once_left, current = seen.engine.call(seen.state, limit=5.0)
    rows = [tuple(row[i] for i in range(1, 6)) for row in log.values()]
    return rows, once_left, current


def test_the_c_delivery_does_deliver_in_c(wired: SimpleNamespace) -> None:
    assert wired.delivery.c_deliver is True


def test_c_deliver_leaves_what_the_lua_deliver_leaves(wired: SimpleNamespace) -> None:
    for sub_id, event in EVENTS:
        wired.delivery(sub_id, event)
    assert wired.fallback == []
    c_errors = [(sub_id, text.split("\n")[0]) for sub_id, text in wired.failed]
    assert (*_state(wired), c_errors) == _lua_reference()
    rows, once_left, current = _state(wired)
    assert rows[0] == (7, "hit", 1, 1, 1) and rows[2] == (100, "own", 55, 3, 3)
    assert rows[3] == (9, "hit", 4, 4, 4)  # a None field is absent: filled in
    assert once_left is False and current == 14  # the once handler ran once, then was removed
    assert c_errors == [(3, "deliver.lua:9: boom 8")]
    assert [row[:2] for row in rows[-5:]] == [
        ('"k1"=1 "k2"=x "seq"=10 "tick"=1 "type"=a', "a"),
        ('"k1"=y "k2"=2 "seq"=11 "tick"=1 "type"=b', "b"),
        ('""=3 "k4"=4 "k5"=5 "' + "long" * 12 + '"=1 "n\\0ul"=2 "seq"=12 "tick"=1 "type"='
         + "a" * 50, "a" * 50),
        ('"k1"=1 "seq"=13 "tick"=1 "type"=a', "a"),
        ('"' + "long" * 12 + '"=6 "seq"=14 "tick"=1 "type"=' + "a" * 50, "a" * 50),
    ]


# What c_deliver keeps (wrap_deliver in _fastcall.c): the values of these
# upvalues of the Lua deliver, found when the delivery is made.
KEPT = ("handlers", "message_handler", "delivering", "patterns")

# Lua source with its comments and strings blanked (a `--` or `=` inside
# either is not code).
_NOT_CODE = re.compile(
    r"--\[(=*)\[.*?\]\1\]|--[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'|\[(=*)\[.*?\]\2\]",
    re.DOTALL)
_LVALUE = r"[A-Za-z_]\w*(?:\s*(?:\.\s*[A-Za-z_]\w*|\[[^\]\n]*\]))*"
# An assignment statement: its target list where a statement can start (a
# line's start, after `;` or `)`, after then/do/else/end), then `=` (not `==`).
_ASSIGNMENT = re.compile(
    r"(?:^|(?<=[;)])|(?<=\bthen)|(?<=\bdo)|(?<=\belse)|(?<=\bend))\s*(local\s+)?"
    rf"({_LVALUE}(?:\s*,\s*{_LVALUE})*)\s*=(?!=)",
    re.MULTILINE)


def assignments(source: str, name: str) -> list[tuple[bool, str]]:
    """Every statement of Lua ``source`` that assigns the variable ``name``
    itself (not a field of it): (whether it is a ``local`` declaration, its
    text); a ``function name(...)`` statement counts as an assignment."""
    code = _NOT_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)) if m.group(0)[0] == "-"
                         else '""' + "\n" * m.group(0).count("\n"), source)
    found = []
    for m in _ASSIGNMENT.finditer(code):
        targets = [t.strip() for t in m.group(2).split(",")]
        if name in targets:
            found.append((m.group(1) is not None, m.group(0).strip()))
    found += [(False, m.group(0)) for m in re.finditer(rf"\bfunction\s+{name}\s*\(", code)]
    return found


def test_script_env_assigns_what_c_deliver_keeps_only_once() -> None:
    # c_deliver holds the values of these upvalues as they were when the
    # delivery was made: a later assignment in script_env.lua would not
    # reach it, so the file must make each once, at its `local` line.
    for name in KEPT:
        found = assignments(SCRIPT_ENV, name)
        assert len(found) == 1 and found[0][0], (name, found)


@pytest.mark.parametrize("line", [
    "local function reset() handlers = {} end",
    "if info.x then delivering = { seq = false } end",
    "handlers, info = {}, nil",
    "info, handlers = nil, {}",
    "function events.reset(...) message_handler = ... end",
    "do delivering = {} end",
    "x = 1; delivering = {}",
    "  delivering = {}",
    "function delivering() end",
])
def test_the_guard_sees_every_later_assignment(line: str) -> None:
    # review of 5a1c76f: the first guard only looked at a line's start (and
    # after `,`/`(`), so each of these passed it while c_deliver would keep
    # the first table and the Lua deliver use the new one.
    source = SCRIPT_ENV.replace("local function forget(id)", line + "\nlocal function forget(id)")
    assert any(len(assignments(source, name)) != 1 for name in KEPT), line


def test_the_guard_ignores_fields_comparisons_comments_and_strings() -> None:
    source = (
        "local handlers = {}\n"
        "handlers[id] = nil\n"
        "handlers.x = 1\n"
        "if h == handlers then end\n"
        "if a ~= handlers or handlers <= b or b >= handlers then end\n"
        "-- handlers = {}\n"
        "--[[ handlers = {} ]]\n"
        "local s = \"handlers = {}\"\n"
        "local t = [[\nhandlers = {}\n]]\n"
        "f(handlers, x == 1)\n"
    )
    assert assignments(source, "handlers") == [(True, "local handlers =")]


def test_a_deliver_without_the_upvalues_runs_as_lua() -> None:
    plain = "local t = 0\nreturn function(id, e) t = t + 1 return true end, function() return t end"
    for seen in _wire(plain):
        assert seen.delivery.c_deliver is False
        seen.delivery(1, _event(1, None))
        assert seen.engine.call(seen.state, limit=5.0) == (1,)
