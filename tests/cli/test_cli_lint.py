"""The globals lint and its tokenizer, on source text (no Lua engine)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from moonbus.cli.lint import assigned_globals, lint_globals
from moonbus.lua.tokens import tokenize

KNOWN = {"print", "pairs", "ipairs", "string", "os", "events", "shared", "logger", "tostring"}
LIBS = {"os": {"time", "clock", "date", "difftime"}, "string": {"format", "rep"}}


def messages(source: str) -> list[tuple[int, str]]:
    return [(f.line, f.message) for f in lint_globals(source, KNOWN, LIBS)]


def test_tokenizer_skips_comments_and_strings() -> None:
    source = (
        "-- a comment with x = 1\n"
        "local s = 'it''s' .. \"q\\\"uote\" --[[ long\ncomment ]] .. [==[ long\n]] string ]==]\n"
        "y = 0x1p4 + 3.5e-2 + .5\n"
    )
    tokens = tokenize(source)
    names = [(t.text, t.line) for t in tokens if t.kind == "name"]
    assert names == [("s", 2), ("y", 5)]
    assert [t.text for t in tokens if t.kind == "number"] == ["0x1p4", "3.5e-2", ".5"]
    assert sum(t.kind == "string" for t in tokens) == 4


def test_locals_params_loops_and_fields_are_fine() -> None:
    source = """
local a, b <const> = 1, 2
local function f(x, ...)
  local t = { key = x, [a] = b }
  for i, v in ipairs(t) do print(i, v) end
  for n = 1, 3 do t.key = n end
  t.other, t[1] = 1, 2
  return f, t.key:upper(), string.format("%d", a)
end
local obj = {}
function obj.method(self) return self end
function obj:other() return self.x end
repeat local r = 1 until r == 1
if a then local z = 1 elseif b then local z = 2 else local z = 3 end
goto done
::done::
"""
    assert messages(source) == []


def test_global_assignments_are_reported_once_except_lifecycle() -> None:
    source = """
function on_start() end
function poll() counter = (counter or 0) + 1 end
on_stop = function() end
counter = 5
x, y = 1, 2
function helper() end
"""
    assert [m[0] for m in messages(source)] == [3, 6, 6, 7]
    assert all("assignment to global" in m[1] for m in messages(source))


def test_unknown_reads_are_reported_unless_assigned_somewhere() -> None:
    source = "function poll()\n  loger.info(count)\n  return later()\nend\nfunction later() end\n"
    found = messages(source)
    unknown = "(not a Lua, moonbus or game global, never assigned)"
    assert (2, f"unknown global 'loger' {unknown}") in found
    assert (2, f"unknown global 'count' {unknown}") in found
    assert not any("'later'" in m and "unknown" in m for _, m in found)


def test_removed_library_fields() -> None:
    found = messages("local t = os.difftime(2, 1)\nos.execute('ls')\nlocal d = string.dump\n")
    assert found == [
        (2, "'os.execute' is not available in the sandbox"),
        (3, "'string.dump' is not available in the sandbox"),
    ]
    # A local called os is the script's own business.
    assert messages("local os = {}\nos.execute = 1\nprint(os.execute)\n") == []


def test_function_inside_a_table_constructor_and_call() -> None:
    source = """
events.on("tick", function(e)
  local n = e.tick
  total = n
end)
local t = { f = function() local q = 1 return q end, g = 2 }
"""
    assert [m[0] for m in messages(source)] == [4]


def test_assigned_globals() -> None:
    assert assigned_globals("a = 1\nlocal b = 2\nfunction c() d = 1 end\n") == {"a", "c", "d"}


@given(st.lists(st.sampled_from(["local", "x", "=", "1", "function", "(", ")", "end", "{", "}",
                                 "do", "if", "then", ",", ".", "y", "'s'", "--c\n", "\n"]),
                max_size=40))
def test_lint_never_crashes_on_token_soup(words: list[str]) -> None:
    lint_globals(" ".join(words), KNOWN, LIBS)


def test_near_misses_of_lifecycle_names_say_what_was_meant() -> None:
    source = """
local script = {}
function onStart() end
function Poll() return 100 end
function on_stop() end
function script:on_strat() end
function script.OnStop() end
function script:poll() end
function polling() end
return script
"""
    found = messages(source)
    assert (3, "'onStart' is not a lifecycle function and is never called: "
               "did you mean on_start?") in found
    assert any(line == 4 and "did you mean poll?" in msg for line, msg in found)
    assert any(line == 6 and "'on_strat'" in msg and "on_start?" in msg for line, msg in found)
    assert any(line == 7 and "did you mean on_stop?" in msg for line, msg in found)
    # the real names, and names that are not near misses, get no such warning
    assert not any(line in (5, 8) for line, _ in found)
    assert not any("polling" in msg and "did you mean" in msg for _, msg in found)


def test_side_effects_in_top_level_code_are_reported_once_a_line() -> None:
    source = """
local me = players:local_player():name()
shared:int("boots"):increment()
local fresh = shared:int("boots"):get()
events:emit("hello", {})
events:on("tick", function(e) players:local_player() shared:int("n"):increment() end)
function on_start()
  chat:send("hi")
  shared:table("t"):set("k", 1)
  events:emit("started", {})
end
"""
    found = [(f.line, f.message) for f in lint_globals(
        source, KNOWN | {"players", "chat"}, LIBS, host_globals={"players", "chat"})]
    lines = [line for line, _ in found]
    assert lines == [2, 3, 5], found
    assert "host call 'players:local_player' in top-level code runs twice" in found[0][1]
    assert "shared write ':increment'" in found[1][1]
    assert found[2][1].startswith("events:emit in top-level code")
