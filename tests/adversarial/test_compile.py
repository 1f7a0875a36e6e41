"""SPEC §4b "Compiling is limited too": ``load`` in a script, script files, runner
job sources and ``moonbus check`` compile under a time limit and a size cap.

The attack: a source that is cheap to build and costly to parse. 160 nested
functions with 199 locals each, then ~900,000 ``x=x`` statements: every
``x`` is looked up through all 160 levels (about 30,000 name comparisons).
Unlimited, the Lua parser (which runs no hooks) takes tens of seconds on it;
fed piece by piece through a Lua reader (``moonbus.lua.compile_limits``) it is
cut at the time limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moonbus.errors import ConfigError, ScriptSourceTooLarge, ScriptTimeout
from moonbus.host.context import HostSettings
from moonbus.lua.fastcall import native_available
from moonbus.lua.sandbox import SandboxFactory
from moonbus.runner import Runner
from moonbus.runtime import Runtime
from tests.cli.conftest import Invoke, moonbus  # noqa: F401 (the CLI fixture)

# Event delivery into Lua: the C fast path (when built) and the Python path.
PATHS = ["native", "python"] if native_available() else ["python"]
DEPTH, LOCALS, STATEMENTS = 160, 199, 900_000
# The same source, built in Lua with string.rep (a few milliseconds).
PATHO_LUA = f"""
local function patho()
  local names = {{}}
  for i = 1, {LOCALS} do names[i] = "a" .. i end
  local head = ("local function f() local " .. table.concat(names, ",") .. " "):rep({DEPTH})
  return head .. ("x=x "):rep({STATEMENTS}) .. ("end "):rep({DEPTH})
end
"""
BOUND = 10.0  # seconds of wall time any host call here may take (limits are far lower)


def patho_source() -> str:
    names = ",".join(f"a{i}" for i in range(1, LOCALS + 1))
    head = f"local function f() local {names} " * DEPTH
    return head + "x=x " * STATEMENTS + "end " * DEPTH


COMPANION = """
events:on("tick", function(e) shared:int("ticks"):increment() end)
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(params=[(path, mode) for path in PATHS for mode in ("immediate", "deferred")],
                ids="-".join)
def runtime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """A stepped runtime on each delivery path, in each delivery mode."""
    path, mode = request.param
    if path == "python":
        monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1")
    rt = Runtime(threaded=False, clock=lambda: 0.0, event_delivery=mode)
    try:
        yield rt
    finally:
        rt.close()


def _deliver(rt: Runtime) -> None:
    rt.run_due()
    assert rt.flush_events(BOUND)


def test_runtime_built_load_in_a_handler_is_cut(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    offender = rt.load(_write(tmp_path, "offender.lua", PATHO_LUA + """
events:on("attack", function()
  local f, err = load(patho())
  shared:string("after"):set("load returned: " .. tostring(err))  -- never runs
end)
events:on("attack_in_coroutine", function()
  coroutine.wrap(function() pcall(load, patho()) end)()
  shared:string("after"):set("the coroutine returned")  -- never runs
end)
"""))
    companion = rt.load(_write(tmp_path, "companion.lua", COMPANION))
    offender.start()
    companion.start()
    for kind in ("attack", "attack_in_coroutine"):
        started = time.monotonic()
        rt.bus.emit(kind)
        _deliver(rt)
        assert time.monotonic() - started < BOUND
    for tick in range(3):
        rt.bus.emit("tick", tick=tick)
    _deliver(rt)
    assert companion.shared.int("ticks").get() == 3
    assert offender.shared.string("after").get() == ""
    assert offender.handler_errors == 2
    for error in offender.errors:
        assert "time limit of 100 ms exceeded while compiling (load)" in error
    assert rt.factory.statistics().compiles_timed_out == 2
    assert offender.status == "running"  # a handler error, as for any time limit


def test_ordinary_loads_work_and_pieces_join_exactly(tmp_path: Path) -> None:
    """Sources longer than one piece (256 bytes) cut through tokens, long
    strings and UTF-8 characters: they compile exactly as one string would."""
    with Runtime(threaded=False, clock=lambda: 0.0) as rt:
        host = rt.load(_write(tmp_path, "loads.lua", """
local text = ("é-ü-" .. string.rep("x", 251)):rep(9)
local src = "local t = {} " .. ("t[#t + 1] = 12345.5e0 "):rep(300)
  .. "return t, [==[" .. text .. "]==], 'é' .. \\"\\\\u{1F600}\\""
local t, long, short = load(src, "=pieces")()
shared:int("n"):set(#t)
shared:int("sum"):set(math.floor(t[1] + t[300]))
shared:bool("same"):set(long == text and short == "é\\u{1F600}")
shared:int("small"):set(load("return 1 + ...")(41))
local f, err = load("x = = 1", "=broken")
shared:string("err"):set(err)
"""))
        host.start()
        ns = host.shared
        assert (ns.int("n").get(), ns.int("sum").get()) == (300, 24691)
        assert ns.bool("same").get() is True
        assert ns.int("small").get() == 42
        assert ns.string("err").get() == "broken:1: unexpected symbol near '='"
        assert rt.factory.statistics().compiles_timed_out == 0


def test_pathological_script_file_fails_its_start_naming_file_and_limit(tmp_path: Path) -> None:
    settings = HostSettings(lifecycle_timeout=0.5)
    with Runtime(threaded=False, clock=lambda: 0.0, settings=settings) as rt:
        companion = rt.load(_write(tmp_path, "companion.lua", COMPANION))
        companion.start()
        host = rt.load(_write(tmp_path, "patho.lua", patho_source()))
        started = time.monotonic()
        with pytest.raises(ScriptTimeout, match=r"time limit of 500 ms exceeded while compiling "
                                                r"patho\.lua"):
            host.start()
        assert time.monotonic() - started < BOUND
        assert host.status == "failed"
        rt.bus.emit("tick", tick=1)
        assert companion.shared.int("ticks").get() == 1
        with pytest.raises(ScriptTimeout, match=r"while compiling companion\.lua"):
            companion.reload(text=patho_source())  # checked before the running one stops
        assert companion.status == "running"
        rt.bus.emit("tick", tick=2)
        assert companion.shared.int("ticks").get() == 2
        assert rt.factory.statistics().compiles_timed_out == 2


def test_pathological_module_is_cut_inside_require(tmp_path: Path) -> None:
    folder = tmp_path / "modded"
    folder.mkdir()
    _write(folder, "manifest.json", "{}")
    _write(folder, "main.lua", 'local m = require("patho")\n')
    _write(folder, "patho.lua", patho_source())
    settings = HostSettings(lifecycle_timeout=0.5)
    with Runtime(threaded=False, clock=lambda: 0.0, settings=settings) as rt:
        host = rt.load(folder)
        started = time.monotonic()
        with pytest.raises(ScriptTimeout, match="time limit of 500 ms exceeded"):
            host.start()
        assert time.monotonic() - started < BOUND
        assert rt.factory.statistics().compiles_timed_out == 1


def test_check_exits_2_on_a_pathological_file(
    moonbus: Invoke,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, "patho.lua", patho_source())
    good = _write(tmp_path, "good.lua", "local n = 1\nreturn n\n")
    started = time.monotonic()
    result = moonbus("check", "--compile-timeout", "0.3", path, good)
    assert time.monotonic() - started < BOUND
    assert result.exit_code == 2
    assert f"{path}: compiling took longer than the time limit of 0.3 s" in result.output
    assert "good.lua" not in result.output  # the other script compiled
    assert moonbus("check", "--compile-timeout", "nan", good).exit_code == 2


def test_deep_nesting_gives_a_clean_message(moonbus: Invoke, tmp_path: Path) -> None:  # noqa: F811
    deep = "return " + "(" * 300 + "1" + ")" * 300 + "\n"
    result = moonbus("check", _write(tmp_path, "deep.lua", deep))
    assert result.exit_code == 2
    line = result.output.splitlines()[0]
    assert line == (f"{tmp_path / 'deep.lua'}: too many nested blocks, functions, calls or "
                    "expressions (the parser ran out of C stack)")
    with Runtime(threaded=False, clock=lambda: 0.0) as rt:
        host = rt.load(_write(tmp_path, "nests.lua", f"""
local f, err = load({deep!r}, "=nested")
shared:string("err"):set(err)
"""))
        host.start()
        assert host.shared.string("err").get() == (
            "nested: too many nested blocks, functions, calls or expressions "
            "(the parser ran out of C stack)"
        )


def test_oversize_sources_are_refused_naming_the_limit(tmp_path: Path) -> None:
    settings = HostSettings(max_source_bytes=1000)
    with Runtime(threaded=False, clock=lambda: 0.0, settings=settings) as rt:
        host = rt.load(_write(tmp_path, "big_load.lua", """
events:on("go", function()
  local ok, err = pcall(load, ("x=1 "):rep(251))
  shared:string("err"):set(err)
  shared:int("small"):set(load(("x=1 "):rep(248) .. "return 7")())
end)
"""))
        host.start()
        rt.bus.emit("go")
        assert host.shared.string("err").get() == (
            "load: the source is 1004 bytes, more than the limit of 1000 bytes (max_source_bytes)"
        )
        assert host.shared.int("small").get() == 7
        big = _write(tmp_path, "big.lua", "-- é\n" + "x = 1\n" * 200)
        with pytest.raises(ConfigError, match=r"is 1206 bytes, more than the limit of 1000 bytes"):
            rt.load(big)
        text = rt.load(tmp_path / "inline.lua", text="x = 1\n" * 200)
        with pytest.raises(ScriptSourceTooLarge, match=r"inline\.lua: the source is 1200 bytes, "
                                                       r"more than the limit of 1000 bytes"):
            text.start()
        assert rt.factory.statistics().sources_refused == 2
        folder = tmp_path / "modded"
        folder.mkdir()
        _write(folder, "manifest.json", "{}")
        _write(folder, "main.lua", 'shared:string("err"):set(select(2, pcall(require, "big")))')
        _write(folder, "big.lua", "x = 1\n" * 200)
        modded = rt.load(folder)
        modded.start()  # the module is named as the script knows it, not by the host's path
        assert modded.shared.string("err").get() == (
            "modded/main.lua:1: script modded/big.lua is 1200 bytes, more than the limit of "
            "1000 bytes (max_source_bytes)"
        )


def test_the_size_cap_is_a_live_setting(tmp_path: Path) -> None:
    with Runtime(threaded=False, clock=lambda: 0.0) as rt:
        assert "max_source_bytes = 4194304" in rt.admin.run("settings")
        assert rt.admin.run("settings.set max_source_bytes 1000") == "max_source_bytes = 1000"
        host = rt.load(_write(tmp_path, "later.lua", """
local ok, err = pcall(load, ("x=1 "):rep(300))
shared:string("err"):set(err)
"""))
        host.start()  # started after the change: the new cap applies
        assert "more than the limit of 1000 bytes" in host.shared.string("err").get()


def test_runner_job_sources_are_limited(tmp_path: Path) -> None:
    with Runner(workers=1, max_source_bytes=4 * 1024 * 1024) as runner:
        started = time.monotonic()
        error = runner.submit(patho_source(), timeout=0.3).exception(timeout=BOUND)
        assert isinstance(error, ScriptTimeout)
        assert "time limit of 300 ms exceeded while compiling job" in str(error)
        in_job = runner.submit(PATHO_LUA + "return load(patho())", timeout=0.3)
        error = in_job.exception(timeout=BOUND)
        assert isinstance(error, ScriptTimeout)
        assert "while compiling (load)" in str(error)
        assert time.monotonic() - started < 2 * BOUND
        huge = runner.submit("return 1 --" + "x" * (4 * 1024 * 1024))
        assert isinstance(huge.exception(timeout=BOUND), ScriptSourceTooLarge)
        assert runner.submit("return 1 + ...", (41,)).result(timeout=BOUND) == 42
        stats = runner.statistics()
        assert (stats.compiles_timed_out, stats.sources_refused) == (2, 1)
    with Runner(workers=1, max_source_bytes=100) as small:
        with pytest.raises(ScriptSourceTooLarge, match="limit of 100 bytes"):
            small.compile("return 1 --" + "x" * 100)
        assert small.submit("return load(('x=1 '):rep(30))").exception(timeout=BOUND) is not None


def test_setting_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_source_bytes must be a positive int"):
        SandboxFactory(max_source_bytes=0)
    with SandboxFactory() as factory, pytest.raises(ConfigError, match="max_source_bytes"):
        factory.create("x", max_source_bytes=True)  # type: ignore[arg-type]
