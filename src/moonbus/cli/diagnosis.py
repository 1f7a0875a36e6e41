"""What ``moonbus doctor`` checks: can this install run scripts, and how fast.

Each probe does the real thing on a small scale instead of trusting a flag:
the core probe loads, starts, polls, feeds an event to and stops a script in a
stepped ``Runtime`` (so a package file missing from the install, such as a Lua
chunk, shows up as the error a game would get); the time-limit probe stops a
runaway loop through the same ``lua_sethook`` machinery every engine uses; each
C fast path is asked through the same decision its module makes (import of the
extension, ``MOONBUS_PURE_PYTHON``, the lupa module it was built for).

A finding is ``required`` when moonbus cannot serve a game without it (Python,
lupa, the core, time limits, and a Redis the user configured); the C fast
paths are optional (the pure-Python paths behave the same, slower).

Threads: every probe runs on the calling thread and releases what it made
(runtimes, engines, connections) before it returns; nothing is kept.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_REDIS_URL",
    "REDIS_URL_ENV",
    "Finding",
    "core_findings",
    "fast_path_findings",
    "lupa_summary",
    "moonbus_version",
    "redis_finding",
    "version_line",
]

REDIS_URL_ENV = "MOONBUS_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_T = TypeVar("_T")
_LIMIT = 0.1  # seconds: the handler-sized limit the time-limit probe uses
_CORE_SCRIPT = """
events:on("doctor:ping", function(e) shared:int("heard"):add(e.n) end)
function on_start() shared:int("started"):set(1) end
function poll() shared:int("polls"):increment() return 10 end
"""


@dataclass(frozen=True)
class Finding:
    """One line of the report.

    ``status`` is one word ("ok", "on", "off", "missing", "unreachable",
    "FAILED"); ``good`` whether that is the healthy state; ``required``
    whether a finding that is not ``good`` makes moonbus unusable here.
    """

    name: str
    status: str
    detail: str
    good: bool
    required: bool

    @property
    def broken(self) -> bool:
        """A required part does not work (``moonbus doctor`` exits 1)."""
        return self.required and not self.good


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def moonbus_version() -> str:
    """The installed distribution's version (``importlib.metadata``); the
    package's own ``__version__`` when it runs from a source tree."""
    try:
        return importlib.metadata.version("moonbus")
    except importlib.metadata.PackageNotFoundError:
        import moonbus

        return moonbus.__version__


def lupa_summary() -> str:
    """"lupa 2.8, Lua 5.4" (the Lua moonbus uses: ``lupa.lua54``), or why not."""
    try:
        lupa_version = importlib.metadata.version("lupa")
    except importlib.metadata.PackageNotFoundError:
        return "lupa not installed"
    try:
        lua = importlib.import_module("lupa.lua54")
    except ImportError as exc:
        return f"lupa {lupa_version}, no Lua 5.4 ({_error_text(exc)})"
    major, minor = lua.LUA_VERSION[:2]
    return f"lupa {lupa_version}, Lua {major}.{minor}"


def version_line() -> str:
    """What ``moonbus --version`` prints."""
    return f"moonbus {moonbus_version()} ({lupa_summary()})"


def _python() -> Finding:
    good = sys.version_info >= (3, 11)
    detail = f"{platform.python_version()} ({platform.python_implementation()}) {sys.executable}"
    if not good:
        detail += "; moonbus needs Python >= 3.11"
    return Finding("python", "ok" if good else "FAILED", detail, good, True)


def _package() -> Finding:
    import moonbus

    where = Path(moonbus.__file__).parent
    return Finding("moonbus", "ok", f"{moonbus_version()} at {where}", True, True)


def _lupa() -> Finding:
    summary = lupa_summary()
    good = summary.startswith("lupa ") and "no Lua" not in summary
    detail = summary + " (lupa.lua54)" if good else summary
    return Finding("lupa", "ok" if good else "FAILED", detail, good, True)


def _probe(name: str, run: Callable[[], str]) -> Finding:
    """A required probe: ``run`` returns the detail, or raises what is broken."""
    try:
        return Finding(name, "ok", run(), True, True)
    except Exception as exc:  # reported: the probe exists to show what breaks
        return Finding(name, "FAILED", _error_text(exc), False, True)


def _run_core() -> str:
    """Load, start, poll, deliver an event to and stop a script (stepped runtime)."""
    from moonbus.runtime import Runtime

    now = [0.0]
    started = time.perf_counter()
    with Runtime(threaded=False, clock=lambda: now[0]) as rt:
        host = rt.load("doctor.lua", text=_CORE_SCRIPT)
        host.start()
        rt.run_due(now[0])
        rt.bus.emit("doctor:ping", {"n": 2})
        now[0] = 0.05
        rt.run_due(now[0])
        heard = host.shared.int("heard").get()
        polls = host.shared.int("polls").get()
        host.stop(wait=False)
        now[0] = 0.1
        rt.run_due(now[0])
        if host.errors or heard != 2 or polls < 1 or host.status != "stopped":
            raise RuntimeError(
                f"the probe script misbehaved: status {host.status}, heard {heard}, "
                f"polls {polls}, errors {host.errors}"
            )
    took = (time.perf_counter() - started) * 1000
    return f"a script started, polled, handled an event and stopped ({took:.0f} ms)"


def _run_time_limit() -> str:
    """A runaway loop must end with ScriptTimeout near the limit."""
    from moonbus.errors import ScriptTimeout
    from moonbus.lua.sandbox import SandboxFactory

    with SandboxFactory() as factory:
        engine = factory.create("doctor")
        try:
            chunk = engine.compile("while true do end", "doctor.lua", engine.new_env())
            started = time.monotonic()
            try:
                engine.call(chunk, limit=_LIMIT)
            except ScriptTimeout:
                took = time.monotonic() - started
            else:
                raise RuntimeError("a runaway loop returned instead of timing out")
        finally:
            engine.close()
    return (f"lua_sethook/lua_gethook found in lupa.lua54; a runaway loop was stopped "
            f"after {took:.2f} s (limit {_LIMIT} s)")


def core_findings() -> list[Finding]:
    """Python, the package, lupa, the core and the time limits (all required)."""
    findings = [_python(), _package(), _lupa()]
    if findings[-1].good:
        findings.append(_probe("core", _run_core))
        findings.append(_probe("time limits", _run_time_limit))
    return findings


# ----------------------------------------------------------------- fast paths
def _fast_path(name: str, module: str, on: Callable[[], bool],
               why_off: Callable[[], str] | None = None, *, env_switch: bool = True) -> Finding:
    """One optional fast path: on, or off with the reason the loader gives
    (``moonbus.native.load_fast_path``: not built, the environment switch, a
    free-threaded interpreter) or ``why_off`` for a path-specific condition."""
    from moonbus.native import load_fast_path, pure_python_forced

    loaded = load_fast_path(module, env=env_switch)
    if not loaded.on:
        return Finding(f"fast path: {name}", "off", loaded.reason, False, False)
    try:
        enabled = on()
    except Exception as exc:  # an optional path that breaks is reported, not fatal
        return Finding(f"fast path: {name}", "off", f"{module}: {_error_text(exc)}", False,
                       False)
    if enabled:
        detail = module
        if pure_python_forced() and not env_switch:
            detail += " (MOONBUS_PURE_PYTHON does not switch this one off)"
        return Finding(f"fast path: {name}", "on", detail, True, False)
    reason = why_off() if why_off is not None else f"{module} is built but not used"
    return Finding(f"fast path: {name}", "off", reason, False, False)


def _bus_emit() -> bool:
    from moonbus.bus.core import native_available

    return native_available()


def _gate() -> bool:
    from moonbus.host.gate import DeliveryGate, PyGateCounter

    return not issubclass(DeliveryGate, PyGateCounter)


def _with_engine(use: Callable[[Any], _T]) -> _T:
    from moonbus.lua.sandbox import SandboxFactory

    with SandboxFactory() as factory:
        engine = factory.create("doctor")
        try:
            return use(engine)
        finally:
            engine.close()


def _lua_delivery() -> bool:
    """Whether an event engine would get the C delivery (the host's own call)."""
    from moonbus.host.context import HostSettings

    def wire(engine: Any) -> bool:
        deliver = engine.compile("return function() end", "doctor.lua", engine.new_env())
        delivery = engine.native_delivery(
            engine.call(deliver, limit=1.0)[0], fallback=lambda *a: None,
            failed=lambda *a: None, settings=HostSettings(),
        )
        return delivery is not None

    return _with_engine(wire)


def _lua_delivery_off() -> str:
    from moonbus.lua.fastcall import FAST_CALL
    from moonbus.native import load_fast_path

    built_for: str = getattr(load_fast_path(FAST_CALL).module, "LUA_MODULE", "?")
    lua_module: str = _with_engine(lambda engine: engine.lua_module.__name__)
    if lua_module != built_for:
        return f"engines use {lua_module}, the extension was built for {built_for}"
    return "lupa's runtime lock was not found (this lupa version keeps it elsewhere)"


def _lua_convert() -> bool:
    """Whether an engine copies host data into Lua in C (moonbus.lua.fastconvert)."""
    return _with_engine(lambda engine: engine.converter.native is not None)


def _lua_arena() -> bool:
    """Whether script engines get arena chunks (moonbus.lua.arena)."""
    from moonbus.lua.sandbox import DEFAULT_ARENA_BYTES, SandboxFactory

    with SandboxFactory(arena_bytes=DEFAULT_ARENA_BYTES) as factory:
        factory.create("doctor", generational_gc=True).close()
        return factory.statistics().arena.active


def _deferred_queue() -> bool:
    from moonbus.host.deferred import DeferredDelivery

    delivery = DeferredDelivery(threaded=False)
    try:
        return delivery.native
    finally:
        delivery.close()


def _shared_int() -> bool:
    from moonbus.shared import SharedStore

    with SharedStore() as store:
        handle: Any = store.int("doctor")
        return bool(handle.native_ops())


def _fast_path_use() -> Finding:
    """What the C paths took and handed back in a short real-clock run (a test
    clock sends deliveries to the Python path by design, so not the core probe's)."""
    from moonbus.runtime import Runtime

    try:
        with Runtime(threaded=False) as rt:
            rt.load("doctor.lua", text='events:on("doctor:ping", function() end)').start()
            for n in range(4):  # the first emit of a type caches its route (Python)
                rt.bus.emit("doctor:ping", {"n": n})
            use = rt.fast_path_statistics()
    except Exception as exc:  # optional: reported, not fatal
        return Finding("fast path: use", "FAILED", _error_text(exc), False, False)
    detail = (f"emits {use.emits_taken} in C, {use.emits_handed_back} handed back; "
              f"deliveries {use.deliveries_taken} in C, {use.deliveries_handed_back} handed back")
    took = use.emits_taken > 0 and use.deliveries_taken > 0
    return Finding("fast path: use", "ok" if took else "off", detail, took, False)


def fast_path_findings() -> list[Finding]:
    """Each optional C fast path, on or off and why (see ``moonbus.native``)."""
    return [
        _fast_path("bus emit", "moonbus.bus._fastemit", _bus_emit),
        _fast_path("delivery gate", "moonbus.bus._fastemit", _gate, env_switch=False),
        _fast_path("event delivery into Lua", "moonbus.lua._fastcall", _lua_delivery,
                   _lua_delivery_off),
        _fast_path("deferred event queue", "moonbus.lua._fastcall", _deferred_queue),
        _fast_path("host data into Lua", "moonbus.lua._fastconvert", _lua_convert),
        _fast_path("shared int ops from Lua", "moonbus.shared._fastint", _shared_int),
        _fast_path("Lua objects in arenas", "moonbus.lua._arena", _lua_arena),
        _fast_path_use(),
    ]


# ---------------------------------------------------------------------- redis
def redis_finding(url: str, *, timeout: float, required: bool) -> Finding:
    """Whether the Redis at ``url`` answers a PING within ``timeout`` seconds."""
    from moonbus.redisio.batch import public_url

    shown = public_url(url)
    try:
        import redis
    except ImportError:
        return Finding("redis", "missing", "redis package not installed "
                       "(pip install 'moonbus[redis]')", False, required)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except (ValueError, TypeError) as exc:
        return Finding("redis", "FAILED", f"{shown}: bad URL: {exc}", False, required)
    started = time.perf_counter()
    try:
        client.ping()
        took = (time.perf_counter() - started) * 1000
        server = client.info("server").get("redis_version", "?")
    except (redis.RedisError, OSError) as exc:
        return Finding("redis", "unreachable", f"{shown}: {exc}", False, required)
    finally:
        client.close()
    return Finding("redis", "ok", f"{shown} answered in {took:.1f} ms (Redis {server})", True,
                   required)
