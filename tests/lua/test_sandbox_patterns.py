"""string.find / match / gmatch / gsub under the time limit (pmatch, pcost, patterns.lua).

Four groups:

* attacks: backtracking patterns that hold the C matcher for seconds or
  minutes end in ScriptTimeout under a 100 ms limit, and the engine is
  healthy afterwards;
* fidelity: the Lua port gives the results and error messages of stock Lua's
  C matcher (hypothesis, against a raw ``lupa.lua54.LuaRuntime``), through
  the wrappers with the port forced (budget 0) and with the real dispatch;
  errors name the script's line on both routes;
* the bound: on generated patterns and subjects, the steps the port takes
  (the same steps as the C matcher) never exceed the bound the dispatcher
  uses to decide that a C call is short;
* dispatch: common patterns on ordinary subjects keep the C functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import lupa.lua54 as lua54
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from moonbus.errors import ScriptError, ScriptTimeout
from moonbus.lua.engine import LuaEngine
from moonbus.lua.sandbox import PATTERN_CHUNKS, _stripped

pytestmark = pytest.mark.timeout(120, method="thread")

Run = Callable[..., tuple[Any, ...]]
Healthy = Callable[[LuaEngine], None]

LIMIT = 0.1
ABORT_WITHIN = 2.0


def _pattern_runtime(budget: int | None) -> tuple[Any, Any, Any]:
    """A raw runtime with the pattern chunks loaded as the engine loads them.

    Returns (runtime, port table of pmatch.lua, table returned by patterns.lua).
    ``budget=0`` sends every call to the Lua port.
    """
    lua_dir = resources.files("moonbus.lua")
    runtime = lua54.LuaRuntime(register_eval=False, register_builtins=False)
    chunks = [
        _stripped(lua54, lua_dir.joinpath(name).read_text("utf-8")) for name in PATTERN_CHUNKS
    ]
    loaded = runtime.execute(
        "local e, k, m, c, p, budget = ... local port = load(m, '=pmatch.lua', 'b')("
        " load(k, '=pcompile.lua', 'b')(), load(e, '=pboundary.lua', 'b')())"
        " local cost = load(c, '=pcost.lua', 'b')(port, budget)"
        " return port, load(p, '=patterns.lua', 'b')(port, cost)",
        *chunks,
        budget,
    )
    return runtime, loaded[0], loaded[1]


# ------------------------------------------------------------------ attacks
ATTACKS = {
    "find .-.-b": "return string.find(string.rep('a', 4e4), '.-.-b')",
    "find .-b": "return string.find(string.rep('a', 2e4), '.-b')",
    "method find .-b": "local s = ('a'):rep(2e5) return s:find('.-b')",
    "nested .- with captures": "return ('a'):rep(3e4):match('(.-)(.-)(.-)x')",
    "match .*.*.*x": "return string.match(string.rep('a', 5e3), '.*.*.*x')",
    "%b on a huge unbalanced input": "return string.find(string.rep('(', 1e6), '%b()')",
    "gsub %b": "return string.gsub(string.rep('(', 1e6), '%b()', '')",
    "back-reference": "return string.find(string.rep('a', 3e5), '(a*)%1b')",
    "back-reference to .-": "return string.find(string.rep('ab', 1e5), '(.-)%1%1x')",
    "exponential x?": (
        "local s = string.rep('a', 40)"
        " return s:match(string.rep('a?', 40) .. string.rep('a', 40) .. 'b')"
    ),
    "gmatch %a-b": "for w in string.gmatch(string.rep('a', 1e5), '%a-b') do end",
    "gmatch in pcall": "while true do pcall(string.gmatch(string.rep('a', 1e5), '.-b')) end",
    "gsub with a function": (
        "return string.gsub(string.rep('a', 1e5), '.-b', function(x) return x end)"
    ),
    "plain find, long needle": (
        "return string.find(string.rep('a', 5e6), string.rep('a', 5e4) .. 'b', 1, true)"
    ),
    "find of a needle without specials": (
        "return string.find(string.rep('a', 5e6), string.rep('a', 5e4) .. 'b')"
    ),
    "split helper, long separator": (
        "return #(string.rep('a', 5e6)):split(string.rep('a', 5e4) .. 'b')"
    ),
    "contains helper, long needle": (
        "return (string.rep('a', 5e6)):contains(string.rep('a', 5e4) .. 'b')"
    ),
    "pcall cannot hide it": "while true do pcall(string.find, string.rep('a', 4e4), '.-.-b') end",
}


@pytest.mark.parametrize("source", ATTACKS.values(), ids=list(ATTACKS))
def test_backtracking_is_stopped_by_the_time_limit(
    engine: LuaEngine, lua: Run, assert_healthy: Healthy, source: str
) -> None:
    start = time.monotonic()
    with pytest.raises(ScriptTimeout):
        lua(source, limit=LIMIT)
    elapsed = time.monotonic() - start
    assert elapsed < ABORT_WITHIN, f"aborted only after {elapsed:.2f} s"
    assert_healthy(engine)


def test_long_runs_of_spaces_are_linear_for_trim(lua: Run) -> None:
    # The old trim pattern "^%s*(.-)%s*$" is quadratic in the run of spaces.
    start = time.monotonic()
    assert lua("return (' x' .. (' '):rep(1e6) .. 'y '):trim()", limit=LIMIT) == (
        "x" + " " * 1_000_000 + "y",
    )
    assert time.monotonic() - start < ABORT_WITHIN


@given(st.text(alphabet=" \t\n\r\v\fa.", max_size=30))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_trim_matches_the_pattern_it_replaced(lua: Run, text: str) -> None:
    trimmed, expected = lua("local s = ... return s:trim(), (s:gsub('^%s*(.-)%s*$', '%1'))", text)
    assert trimmed == expected


# ------------------------------------------------------ results in a sandbox
def _raw() -> Any:
    return lua54.LuaRuntime(register_eval=False, register_builtins=False)


# Run in the sandbox and in raw Lua; short subjects take the C route, the
# same calls on subjects made long by repetition take the port.
SANDBOX_CASES = """
local n = ...
local words = ('alpha beta  gamma,delta (x(y)z) 12-34 key = value '):rep(n)
local out = {}
local function add(...)
  local t = table.pack(...)
  for i = 1, t.n do out[#out + 1] = tostring(t[i]) end
end
add(words:find('gamma', 1, true), words:find('%d+'), words:find('(%a+),(%a+)'))
add(words:match('^(%w+)%s*(%w+)'), words:match('(%w+)%s*=%s*(%w+)'), words:match('()%b()()'))
add(words:gsub('%s+', ' '), words:gsub('(%a+)', '<%1>', 5), words:gsub('%f[%w]%w+', {beta = 'B'}))
add(words:gsub('(%d)(%d)', function(a, b) return b .. a end))
for k, v in words:gmatch('(%w+)%s*=%s*(%w+)') do add(k, v) end
local count = 0 for w in words:gmatch('%a+') do count = count + 1 end add(count)
add(words:find('.-%(.-%)'), words:match('(.-)gamma(.-)delta'))
return table.concat(out, '|')
"""


@pytest.mark.parametrize("repeat", [1, 300])
def test_results_match_raw_lua(lua: Run, repeat: int) -> None:
    expected = _raw().execute("return function(...) " + SANDBOX_CASES + " end")(repeat)
    assert lua(SANDBOX_CASES, repeat) == (expected,)


def test_gsub_callback_may_match_other_patterns_on_the_port(lua: Run) -> None:
    source = """
    local s = ('ab'):rep(300)
    local inner = ('x'):rep(400) .. 'y'
    local r, n = s:gsub('.-b', function(m)
      assert(inner:find('.-y') == 1)
      for w in inner:gmatch('.-y') do end
      return m:upper()
    end)
    return r == ('AB'):rep(300), n
    """
    assert lua(source) == (True, 300)


def test_gmatch_iterators_on_the_port_interleave(lua: Run) -> None:
    source = """
    local a = ('ab;'):rep(2000)
    local b = ('cd;'):rep(2000)
    local ia, ib = a:gmatch('(.-);'), b:gmatch('(.-);')
    local n = 0
    while true do
      local x, y = ia(), ib()
      if x == nil then return n, y end
      assert(x == 'ab' and y == 'cd')
      n = n + 1
    end
    """
    assert lua(source) == (2000, None)


@pytest.mark.parametrize("repeat", [1, 50_000])
def test_gsub_callbacks_cannot_yield(lua: Run, repeat: int) -> None:
    source = """
    local s = ('ab'):rep(...)
    local co = coroutine.create(function()
      return s:gsub('.-b', function() coroutine.yield(1) end)
    end)
    return coroutine.resume(co)
    """
    assert lua(source, repeat) == (False, "attempt to yield across a C-call boundary")


# ------------------------------------------------------------ error messages
# `local r = ...`: a call that is not a tail call (see patterns.lua's header).
ERRORS = {
    "local r = s:find('x%')": "malformed pattern (ends with '%')",
    "local r = s:find('[x')": "malformed pattern (missing ']')",
    "local r = s:find('%bx')": "malformed pattern (missing arguments to '%b')",
    "local r = s:find('%fx')": "missing '[' after '%f' in pattern",
    "local r = s:match('(x')": "unfinished capture",
    "local r = s:match('x)')": "invalid pattern capture",
    "local r = s:find('%1')": "invalid capture index %1",
    "local r = s:find(('()'):rep(33))": "too many captures",
    "local r = s:rep(300):find(('x?'):rep(300))": "pattern too complex",
    "local r = s:gsub('x', '%2')": "invalid capture index %2",
    "local r = s:gsub('x', '%y')": "invalid use of '%' in replacement string",
    "local r = s:gsub('x', {x = {}})": "invalid replacement value (a table)",
    "local r = s:gsub('x', function() return true end)": "invalid replacement value (a boolean)",
    "for w in s:gmatch('(x') do end": "unfinished capture",
    "local r = s:find(nil)": "bad argument #1 to 'find' (string expected, got nil)",
    "local r = s:find()": "bad argument #1 to 'find' (string expected, got no value)",
    "local r = string.find(s, 'x', 1.5)": (
        "bad argument #3 to 'find' (number has no integer representation)"
    ),
    "local r = string.match(s, 'x', {})": "bad argument #3 to 'match' (number expected, got table)",
    "local r = s:gsub('x')": (
        "bad argument #2 to 'gsub' (string/function/table expected, got no value)"
    ),
    "local r = string.gsub(s, 'x', 'y', 'z')": (
        "bad argument #4 to 'gsub' (number expected, got string)"
    ),
    "local r = string.gmatch(true, 'x')": (
        "bad argument #1 to 'gmatch' (string expected, got boolean)"
    ),
    "local t = {find = string.find} local r = t:find('x')": (
        "calling 'find' on bad self (string expected, got table)"
    ),
}


@pytest.mark.parametrize("repeat", [1, 100_000], ids=["C route", "port route"])
@pytest.mark.parametrize("statement", list(ERRORS))
def test_errors_name_the_scripts_line(lua: Run, statement: str, repeat: int) -> None:
    with pytest.raises(ScriptError) as caught:
        lua(f"local s = ('x'):rep(...)\n{statement}", repeat)
    assert caught.value.message == "attack.lua:2: " + ERRORS[statement]
    assert caught.value.where == "attack.lua:2"


def test_argument_errors_use_the_type_name(lua: Run) -> None:
    source = "local t = setmetatable({}, {__name = 'Player'})\nlocal r = string.find(t, 'x')"
    with pytest.raises(ScriptError) as caught:
        lua(source)
    assert (
        caught.value.message
        == "attack.lua:2: bad argument #1 to 'find' (string expected, got Player)"
    )


@pytest.mark.parametrize("repeat", [1, 100_000], ids=["C route", "port route"])
@pytest.mark.parametrize(
    ("raised", "message"),
    [("'boom'", "attack.lua:3: boom"), ("'boom', 2", "boom"), ("'boom', 0", "boom")],
)
def test_callback_errors_pass_through_unchanged(
    lua: Run, repeat: int, raised: str, message: str
) -> None:
    source = (
        "local s = ('ab'):rep(...)\nlocal r = s:gsub('.-b', function()\n  error({raised})\nend)"
    )
    with pytest.raises(ScriptError) as caught:
        lua(source.format(raised=raised), repeat)
    assert caught.value.message == message


@pytest.mark.parametrize("repeat", [1, 100_000], ids=["C route", "port route"])
def test_callback_error_values_pass_through(lua: Run, repeat: int) -> None:
    source = """
    local s = ('ab'):rep(...)
    local ok, e = pcall(s.gsub, s, '.-b', function() error({code = 7}) end)
    return ok, e.code
    """
    assert lua(source, repeat) == (False, 7)


# -------------------------------------------------------------- differential
ITEMS = [
    "a",
    "b",
    ".",
    "%a",
    "%d",
    "%s",
    "%w",
    "%A",
    "%S",
    "%p",
    "%x",
    "%u",
    "%l",
    "%c",
    "%g",
    "%z",
    "%%",
    "%.",
    "%(",
    "[ab]",
    "[^a]",
    "[a-c]",
    "[%d_]",
    "[%]]",
    "[]",
    "[^",
    "%b()",
    "%bab",
    "%f[%w]",
    "%f[%W]",
    "%f[a]",
    "(",
    ")",
    "()",
    "%1",
    "%2",
    "%0",
    "^",
    "$",
    "*",
    "+",
    "-",
    "?",
    "[",
    "%",
    "%b",
    "%f",
    "\0",
]
QUANTIFIERS = ["", "", "", "*", "+", "-", "?"]

patterns = st.lists(
    st.tuples(st.sampled_from(ITEMS), st.sampled_from(QUANTIFIERS)), max_size=6
).map(lambda parts: "".join(item + q for item, q in parts))
subjects = st.text(alphabet="ab(). 1_\0%A", max_size=14)
positions = st.one_of(st.none(), st.integers(min_value=-16, max_value=16))
replacements = st.sampled_from(
    ["", "-", "%0", "%1", "<%1|%2>", "%%", "%", "x%", "%x", "[%0%0]", "TABLE", "FUNCTION", 7]
)

HARNESS = """
local f, s, p, a, b = ...
local function show(...)
  local t = table.pack(...)
  local out = {}
  for i = 1, t.n do out[i] = type(t[i]) .. ':' .. tostring(t[i]) end
  return table.concat(out, ' ')
end
local map = {a = 'A', ['('] = false, ab = {}, [1] = 'one', b = 2}
local function fn(x, y)
  if x == 'a' then return 'F' elseif x == 'b' then return false elseif x == '' then return {} end
  return y
end
if f == 'gmatch' then
  return show(pcall(function()
    local out, it = {}, string.gmatch(s, p, a)
    for _ = 1, 40 do
      local r = table.pack(it())
      if r.n == 0 then out[#out + 1] = 'end' break end
      out[#out + 1] = show(table.unpack(r, 1, r.n))
    end
    return table.concat(out, ' | ')
  end))
elseif f == 'gsub' then
  if a == 'TABLE' then a = map elseif a == 'FUNCTION' then a = fn end
  return show(pcall(string.gsub, s, p, a, b))
end
return show(pcall(string[f], s, p, a, b))
"""
# The port's pure-Lua work is capped (a count hook) so that generated
# patterns with an exponential worst case do not stall the test: such an
# example is discarded, not compared.
CAPPED = """
local cap, harness = ...
local run = load(harness, '=harness')
return function(...)
  local capped = false
  debug.sethook(function() capped = true error('instruction cap') end, '', cap)
  local ok, r = pcall(run, ...)
  debug.sethook()
  if capped or not ok then return nil end
  return r
end
"""


@pytest.fixture(scope="module")
def reference() -> Callable[..., str]:
    run = _raw().execute("return load(..., '=harness')", HARNESS)
    return run  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ported() -> Callable[..., str | None]:
    runtime, _, _ = _pattern_runtime(0)
    return runtime.execute(CAPPED, 20_000_000, HARNESS)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dispatched() -> Callable[..., str | None]:
    runtime, _, _ = _pattern_runtime(None)
    return runtime.execute(CAPPED, 20_000_000, HARNESS)  # type: ignore[no-any-return]


calls = st.one_of(
    st.tuples(st.just("find"), subjects, patterns, positions, st.sampled_from([None, True])),
    st.tuples(st.just("match"), subjects, patterns, positions, st.none()),
    st.tuples(st.just("gmatch"), subjects, patterns, positions, st.none()),
    st.tuples(
        st.just("gsub"),
        subjects,
        patterns,
        replacements,
        st.one_of(st.none(), st.integers(min_value=-1, max_value=4)),
    ),
)


@given(calls)
@settings(max_examples=1500, deadline=None)
def test_port_matches_the_c_matcher(
    reference: Callable[..., str], ported: Callable[..., str | None], call: tuple[Any, ...]
) -> None:
    ours = ported(*call)
    assume(ours is not None)
    assert ours == reference(*call)


@given(calls)
@settings(max_examples=500, deadline=None)
def test_dispatch_matches_the_c_matcher(
    reference: Callable[..., str], dispatched: Callable[..., str | None], call: tuple[Any, ...]
) -> None:
    ours = dispatched(*call)
    assume(ours is not None)
    assert ours == reference(*call)


@pytest.mark.parametrize(
    "call",
    [
        ("find", "x", "a", 1, 2),
        ("find", 12345, 23, "2", None),
        ("match", 1.5, ".", None, None),
        ("gsub", 12345, 3, 9, None),
        ("gsub", "abc", "b", 7.0, 1.0),
        ("gsub", "abc", "%w", "%0", "2"),
        ("gmatch", "a b", "%a", "1", None),
        ("find", "abc", "b", 2**62, None),
        ("find", "abc", "b", -(2**62), None),
    ],
)
def test_number_arguments_convert_like_c(
    reference: Callable[..., str], ported: Callable[..., str | None], call: tuple[Any, ...]
) -> None:
    assert ported(*call) == reference(*call)


# ------------------------------------------------------------------ the bound
STEPS = """
local port, info = ...
return function(fname, s, p)
  local cp = port.compile(p, fname ~= 'gmatch')
  local before = port.steps()
  local capped = false
  debug.sethook(function() capped = true error('instruction cap') end, '', 20000000)
  local ok, err = pcall(function()
    if fname == 'find' then port.find(cp, s, 1, true)
    elseif fname == 'match' then port.find(cp, s, 1, false)
    elseif fname == 'gmatch' then port.gmatch(cp, s, 1)()
    else port.gsub(cp, s, '-', 'string', #s + 1) end
  end)
  debug.sethook()
  if capped then return nil end
  return port.steps() - before, info.bound(fname, p, #s)
end
"""


@pytest.fixture(scope="module")
def steps() -> Callable[..., Any]:
    runtime, port, info = _pattern_runtime(None)
    return runtime.execute(STEPS, port, info)  # type: ignore[no-any-return]


@given(
    st.sampled_from(["find", "match", "gmatch", "gsub"]),
    st.text(alphabet="aab(). 1_", max_size=40),
    patterns,
)
@settings(max_examples=1500, deadline=None)
def test_steps_never_exceed_the_bound(
    steps: Callable[..., Any], fname: str, subject: str, pattern: str
) -> None:
    measured = steps(fname, subject, pattern)
    assume(measured is not None)
    taken, bound = measured
    assert taken <= bound


@pytest.mark.parametrize(
    ("fname", "subject", "pattern"),
    [
        ("find", "a" * 60, ".-.-b"),
        ("find", "a" * 30, "a*a*a*b"),
        ("find", " " * 200, "%s+x"),
        ("find", "a" * 100, "(%w+)=(%w+)"),
        ("find", "{" * 100, "{(.-)}"),
        ("match", "a" + " " * 100 + "b", "^%s*(.-)%s*$"),
        ("find", "(" * 200, "%b()"),
        ("find", "a" * 100, "(a*)%1b"),
        ("find", "a" * 24, "a?" * 8 + "a" * 8 + "b"),
        ("find", "a" * 100, "(((((((((a)))))))))b"),
        ("gsub", " a" * 100, "%s+"),
        ("gsub", "a" * 100, "x*"),
        ("gmatch", "a" * 100, "%a-b"),
        ("find", "a b " * 50, "%f[%w]%w+%f[%W]x"),
    ],
)
def test_worst_cases_stay_within_the_bound(
    steps: Callable[..., Any], fname: str, subject: str, pattern: str
) -> None:
    taken, bound = steps(fname, subject, pattern)
    assert 0 < taken <= bound


# ------------------------------------------------------------------ dispatch
# Whether a call ran the Lua port: its step counter moved. The pattern is
# compiled first (patterns.lua's own Lua work), and a count hook stops the
# call early: some of these searches take minutes without a time limit.
ROUTE = """
local port, info = ...
return function(fname, s, p, repl)
  info.threshold(fname, p)
  if repl == 'TABLE' then
    repl = {key = 'KEY'}
  end
  local before = port.steps()
  debug.sethook(function() error('stopped') end, '', 100000)
  pcall(function()
    if fname == 'gmatch' then
      for _ in string.gmatch(s, p) do end
    else
      string[fname](s, p, repl)
    end
  end)
  debug.sethook()
  return port.steps() > before
end
"""


@pytest.fixture(scope="module")
def uses_port() -> Callable[..., bool]:
    runtime, port, info = _pattern_runtime(None)
    return runtime.execute(ROUTE, port, info)  # type: ignore[no-any-return]


LINE = "player Steve joined at 2024-05-01: key = value, /give Alex 1 "


@pytest.mark.parametrize(
    ("fname", "subject", "pattern", "repl"),
    [
        ("find", LINE * 150, "needle", None),
        ("find", LINE * 150, "%d+", None),
        ("match", LINE * 80, "^(%w+)%s*=%s*(.-)$", None),
        ("match", LINE * 150, "^%s*/(%S+)%s*(.*)$", None),
        ("match", LINE, "(%d+)-(%d+)-(%d+)", None),
        ("gsub", LINE * 80, "%s+", " "),
        ("gsub", LINE * 80, "[^%w]", ""),
        ("gsub", LINE * 20, "(%w+)", "<%1>"),
        ("gsub", LINE * 20, "%w+", "TABLE"),
        ("gmatch", LINE * 150, "%a+", None),
        ("gmatch", LINE * 80, "([^,]+)", None),
        ("match", LINE * 3, "{(.-)}", None),
        ("match", LINE * 3, "^%s*(.-)%s*$", None),
    ],
)
def test_common_patterns_keep_the_c_functions(
    uses_port: Callable[..., bool], fname: str, subject: str, pattern: str, repl: Any
) -> None:
    assert not uses_port(fname, subject, pattern, repl)


@pytest.mark.parametrize(
    ("fname", "subject", "pattern", "repl"),
    [
        ("find", "a" * 40_000, ".-.-b", None),
        ("find", "a" * 20_000, ".-b", None),
        ("find", "(" * 1_000_000, "%b()", None),
        ("find", "a" * 300_000, "(a*)%1b", None),
        ("match", "a" * 40, "a?" * 40 + "a" * 40 + "b", None),
        ("gmatch", "a" * 100_000, "%a-b", None),
        ("gsub", "a " * 500_000, "%s+", " "),
        ("gsub", "ab" * 100, "(a)", "%2"),
        ("find", "xyz", "x%", None),
        ("gsub", "ab" * 100_000, "b", "%0%0"),
    ],
)
def test_long_or_failing_searches_take_the_port(
    uses_port: Callable[..., bool], fname: str, subject: str, pattern: str, repl: Any
) -> None:
    assert uses_port(fname, subject, pattern, repl)
