"""One sandboxed Lua state with time, memory and cancellation limits.

Threads: a ``LuaEngine`` is used by one thread at a time; ``_lock`` (an
RLock, because a Python API called from Lua may legitimately call back into
the same engine on the same thread; a reentrant C lock that behaves the same
when the C delivery is built, see ``call_state.py``) enforces it. Only
``abort`` may be called from another thread (the watchdog, or a runner
cancelling a job); it takes ``_hook_lock``, never ``_lock``, so it cannot
deadlock with a running call.
The state of this protocol (tokens, depth, abort reasons, the chain, both
locks) is ``call_state`` (``call_state.py``): a C object when the C delivery
is built, which shares it by layout, so it is read and written as ``cs.<field>``.
How an abort works, and the guarded call every Lua call goes through: ``guarded.py``.

Several protected calls inside one engine call (the runner's batches): Lua
code gets the prelude's own ``call`` as ``protected_call`` (the same
``xpcall`` with ``message_handler`` every call gets, so errors read the
same; ``script_error`` turns its error text into the exception a call would
raise) and ``coroutines_tracked``, which tells whether a coroutine is being
kept alive until the end of the call, as above. An abort still ends the
whole engine call.

A hook runs only between Lua instructions, so C library functions that could
run long are wrapped before the prelude runs: ``bounded.lua`` (string.rep,
table functions) and ``patterns.lua`` (string.find/match/gmatch/gsub, which
fall back to the Lua matcher of ``pmatch.lua`` when ``pcost.lua``'s bound
says the C matcher could take long; loaded on first use by
``lazy_strings.lua``, which takes the C functions away first). The parser runs no hooks either:
``compile`` and the sandbox's ``load`` feed it a piece at a time through a
Lua reader, and refuse sources over the size cap (see ``compile_limits.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moonbus.errors import (
    ClosedError,
    ScriptError,
    ScriptMemoryError,
    ScriptSourceTooLarge,
    ScriptSyntaxError,
)
from moonbus.lua.call_outcome import MEMORY_MESSAGE, split_error
from moonbus.lua.call_state import CallState, EngineLock, make_call_state
from moonbus.lua.compile_limits import COMPILE_PIECE, CompileCounters, oversize
from moonbus.lua.convert import LuaConverter
from moonbus.lua.engine_memory import EngineMemory
from moonbus.lua.fastcall import NativeDelivery, native_delivery
from moonbus.lua.fastconvert import native_quick_bind
from moonbus.lua.guarded import IN_PLACE_SCALARS, GuardedCalls
from moonbus.lua.hooks import HookControl
from moonbus.lua.host_errors import describe_host_error
from moonbus.lua.lazy_strings import ChunkFetcher
from moonbus.lua.lua_room import LuaValueTooLarge
from moonbus.lua.watchdog import Watchdog

__all__ = ["LuaEngine"]

# Attributes holding Lua objects, dropped by close(): the state holds Python callables
# leading back here, so one left kept the state until a cycle collector's pass.
_LUA_HELD = ("_call", "_compile", "_make_env", "_new_task", "_step", "_full_collect", "_rt",
             "_take_spare", "_start_task", "_load_tasks", "_compiling", "protected_call", "_room",
             "coroutines_tracked", "_host_function", "host_function_maker", "quick_bind", "_forget",
             "_drop_task", "message_handler", "sleep_function", "_table_from", "table_from")
# Runs trusted sandbox source under a chunk name (before the prelude removes `load`).
_RUN_NAMED = "function(source, name, ...) return assert(load(source, name, 't'))(...) end"


def _deny_get(obj: object, name: object) -> object:
    raise AttributeError("Python attributes are not accessible from Lua")


def _deny_set(obj: object, name: object, value: object) -> None:
    raise AttributeError("Python attributes are not accessible from Lua")


class LuaEngine(GuardedCalls, EngineMemory):
    """A sandboxed Lua state; made only by ``SandboxFactory.create``."""

    def __init__(
        self,
        *,
        lua_module: Any,
        bounded: str,
        lazy_strings: str,
        patterns: tuple[bytes, ...],
        prelude: str,
        tasks: bytes,
        host_bridge: str,
        hooks: HookControl,
        watchdog: Watchdog,
        name: str,
        memory_limit: int | None,
        max_source_bytes: int,
        frozen_mappings: frozenset[type],
        compile_counters: CompileCounters,
        native: bool = True, generational_gc: int = 0, arena: Any = None,
    ) -> None:
        self.name = name
        # Frozen event-data types (``.copy()``: a dict), handed in: the sandbox knows no bus.
        self._frozen_mappings = frozen_mappings
        self._in_place = set(IN_PLACE_SCALARS)  # argument types pushed without a copy
        # Size cap of every source compiled here (host compiles and load).
        self.max_source_bytes = max_source_bytes
        self._compile_counters = compile_counters
        self._lua = lua_module
        self._hooks = hooks
        self._watchdog = watchdog
        self._armed = watchdog.armed
        self._clock = watchdog.clock
        # The abort-token state (token, depth, reasons...), shared by type with
        # the C delivery: see call_state.py. The locks and chain are its own.
        self._cs = cs = make_call_state(native=native)
        self._lock, self._hook_lock, self._chain = cs.lock, cs.hook_lock, cs.chain
        self._task_threads: dict[int, int] = {}  # task id -> its Lua thread pointer
        self._finished_tasks: list[int] = []  # released by the next new_task
        # The prelude's spare task (id, thread pointer) for start_task; None:
        # ask the prelude (it keeps at most one).
        self._spare: tuple[int, int] | None = None
        rt = lua_module.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            # Handlers, not a filter: lupa skips an attribute_filter for
            # objects with __getitem__ (dicts, lists...), which it indexes by
            # item, readable and writable. Handlers see every access.
            attribute_handlers=(_deny_get, _deny_set),
            max_memory=memory_limit,
        )
        self._rt = rt
        # A full collection callable from Python with nothing to allocate
        # (made now: the prelude strips collectgarbage from the globals).
        self._full_collect = rt.eval(
            "(function(gc) return function() gc('collect') end end)(collectgarbage)")
        self._state = int(rt.execute('return string.format("%p", coroutine.running())'), 16)
        if arena is not None:  # this state's small blocks in chunks of its own (_arena.c)
            arena.install(self._state)
        # The sandbox's own chunks get names of their own: lupa's default
        # ("<python>") would show in the position of errors they raise.
        run_named = rt.eval(_RUN_NAMED)
        run_named(bounded, "=sandbox")
        # The pattern chunks load on first use (lazy_strings.lua).
        self._chunks = ChunkFetcher(patterns, rt)
        strings = run_named(lazy_strings, "=sandbox", self._chunks)
        bridge = run_named(host_bridge, "=sandbox", describe_host_error)
        api = run_named(prelude, "=sandbox", self._enter, self._leave, _deny_get,
                        max_source_bytes, COMPILE_PIECE, compile_counters.refused, strings,
                        generational_gc)
        self._call = api["call"]
        # The same Lua function, for Lua code that makes several protected calls
        # inside one engine call (the runner's batches). Calling it from Python
        # would bypass the limits: it is only ever passed into Lua.
        self.protected_call = api["call"]
        # Lua function: true while a coroutine that did not return normally is
        # kept alive until the end of the call (see prelude's `forget`).
        self.coroutines_tracked = api["tracking"]
        self.message_handler = api["message_handler"]
        self._compile = api["compile"]
        self._compiling = api["compiling"]  # .chunk: the chunk a cut parse left (prelude)
        self._make_env = api["make_env"]
        # The lifecycle-task functions (tasks.lua): loaded with the first task
        # (_load_task_functions); event engines and runner states never run one.
        self._tasks_source = tasks
        self._load_tasks = api["load_tasks"]
        self._new_task: Any = None
        self._take_spare: Any = None
        self._start_task: Any = None
        self._step: Any = None
        self._drop_task: Any = None
        self._forget = api["forget"]
        self.sleep_function = api["sleep"]
        self._host_function = bridge["host_function"]
        self._room = bridge["room"]  # host_bridge.lua: host calls refused above room.limit KiB
        self._set_host_call_room()
        # The same Lua function, for Lua code that wraps the Python callables it
        # gets from the host (script_env.lua's shared handles).
        self.host_function_maker = bridge["host_function"]
        self.converter = LuaConverter(
            rt, lua_module.lua_type, bridge["build_class"], bridge["make_proxy"],
            bridge["unproxy"], box=bridge["box"],
        )
        # Lua function binding quick host calls (fastconvert.native_quick_bind), or None.
        self.quick_bind: Any = native_quick_bind(lua_module, rt, self._state) if native else None
        if native:  # C copies and host method calls, when built
            self.converter.enable_native(lua_module, self._state, self.quick_bind)
        self._table_from = self.table_from = rt.table_from  # a plain-value copy (owner thread)

    @property
    def lua_module(self) -> Any:
        """The lupa module this engine's state comes from (``lupa.lua54``...)."""
        return self._lua

    def native_delivery(
        self,
        func: Any,
        *,
        fallback: Callable[[int, Any], None],
        failed: Callable[[int, Any, Any, str | None, float | None], None],
        settings: Any,
        budget: Any = None, counts: Any = None,
    ) -> NativeDelivery | None:
        """The C fast path of ``call_event`` for ``func`` (see ``fastcall.py``), or None.
        ``budget``: the engine's ``HandlerBudget``; ``counts``: the runtime's ``DeliveryCounts``.

        It follows ``_guarded`` and ``_end_call`` step by step on this
        engine's ``call_state``, so C and Python calls interleave freely; the
        engine's methods it needs are handed in here, never looked up by name.
        """
        with self._lock:
            if self._cs.closed:
                raise ClosedError(f"Lua engine {self.name!r} is closed")
            return native_delivery(
                self, self._cs, self._rt, self._state, func, watchdog=self._watchdog,
                end_call=self._finish_call, abort_on_entry=self._abort_on_entry,
                fallback=fallback, failed=failed, settings=settings, budget=budget, counts=counts,
            )

    @property
    def call_state(self) -> CallState:
        """The state shared with the C delivery (``call_state.py``); owner thread."""
        return self._cs

    @property
    def lock(self) -> EngineLock:
        """Held by whichever thread is using the engine (re-entrant; a C lock
        when the C delivery is built, see ``call_state.py``)."""
        return self._lock

    def lua_type(self, value: Any) -> str | None:
        """Lua type name of a Lua object ("table", "function"...), None for Python values."""
        return self._lua.lua_type(value)  # type: ignore[no-any-return]

    def compile(
        self,
        source: str,
        chunkname: str,
        env: Any,
        *,
        limit: float | None = None,
        capped: bool = True,
    ) -> Any:
        """Compile text ``source`` as ``chunkname`` into ``env``; ScriptSyntaxError on failure.

        ``limit``: seconds of CPU time the parse may take (``ScriptTimeout``
        naming the chunk when it runs over); None only for moonbus's own
        chunks: any source a script, a file or a user brings needs one.
        Sources over ``max_source_bytes`` raise ``ScriptSourceTooLarge``;
        ``capped=False`` when the caller vouches for the size: moonbus's own
        chunks, or a job source just checked in a shorter form (the runner's
        wrapper). Inside a running call (``require``) the compile shares that
        call's deadline.
        """
        cap = self.max_source_bytes
        if capped:
            size = oversize(source, cap)
            if size is not None:
                self._compile_counters.refused()
                raise ScriptSourceTooLarge(
                    f"{chunkname}: the source is {size} bytes, more than the limit of "
                    f"{cap} bytes (max_source_bytes)"
                )
        # lupa pushes the source unprotected (a call argument): one over the free
        # memory aborts the process (Lua's panic) or hangs a host call (``require``).
        # Measured first (lua_room), in the lock's hold that pushes it: another
        # thread's call between the two could fill the state.
        with self._lock:
            if self._cs.closed:  # (its room reads 0 bytes free once released)
                raise ClosedError(f"Lua engine {self.name!r} is closed")
            try:
                self.converter.room.admit(source)
            except LuaValueTooLarge:
                # Garbage counts as used until it is collected (a call that ran
                # out of memory leaves its tables behind): collect, measure again.
                self._full_collect()
                try:
                    self.converter.room.admit(source)
                except LuaValueTooLarge as exc:
                    raise ScriptMemoryError(
                        f"{self.name}: out of memory while compiling {chunkname}: {exc}") from None
            try:
                func, error = self._guarded(self._call, self._compile,
                                            (source, "@" + chunkname, env), limit)
            except ScriptMemoryError as exc:
                raise ScriptMemoryError(f"{self.name}: out of memory while compiling {chunkname}",
                                        traceback=exc.lua_traceback) from exc
        if func is None:
            text = str(error)
            if text.startswith(MEMORY_MESSAGE):  # load() returns it like a syntax error
                raise ScriptMemoryError(f"{self.name}: out of memory while compiling {chunkname}")
            message, where, full = split_error(text)
            raise ScriptSyntaxError(message, where=where, traceback=full)
        return func

    def new_env(self) -> Any:
        """A fresh sandboxed global environment (a Lua table)."""
        with self._lock:
            try:
                return self._make_env()
            except self._lua.LuaMemoryError as exc:
                raise ScriptMemoryError(f"{self.name}: out of memory") from exc

    def _load_task_functions(self) -> None:
        # Under _lock, before the first task: tasks.lua into this state.
        if self._new_task is None:
            api = self._load_tasks(self._tasks_source)
            self._new_task, self._take_spare, self._start_task = (
                api["new_task"], api["take_spare"], api["start_task"])
            self._step, self._drop_task = api["step"], api["drop_task"]

    def new_task(self, func: Any) -> int:
        """A coroutine that runs ``func`` (kept inside Lua); drive it with ``step``.

        A task that finished is released by the next ``new_task`` (or
        ``drop_task``): until then its thread stays alive, so the pointer the
        host tracked while stepping it can never dangle.
        """
        with self._lock:
            self._load_task_functions()
            finished = self._finished_tasks.pop() if self._finished_tasks else None
            task, pointer = self._new_task(func, finished)
            if finished is not None:
                self._task_threads.pop(finished, None)
            self._task_threads[task] = int(pointer, 16)
            return int(task)

    def start_task(
        self, target: Any, name: str, with_self: bool, *, limit: float | None
    ) -> tuple[int | None, str, Any]:
        """Look up ``target[name]`` and, when it is a function, start it as a
        task, in one guarded call: ``(task, "sleep", ms)``, ``(task, "done",
        results)``, or ``(None, "none", None)`` when it is not a function.
        ``with_self``: call it with ``target`` as its first argument (a
        script table's method). Raises like ``step`` (a failing lookup, an
        ``__index`` that runs past ``limit``, included).

        The hot path of polls (``ScriptLifecycle``): the lookup, ``new_task``
        and the first ``step`` as one Lua call instead of three (see the
        prelude's ``start_task``). A task that returned ("done") is not
        finished here: its coroutine is the spare again, and the next start
        runs in it (tasks.lua's ``task_body``); its id must not be stepped
        or dropped after "done". A task that failed is released as after
        ``step``. ``results``: the function's first value only, as ``step``'s.
        """
        with self._lock:
            if self._cs.closed:
                raise ClosedError(f"Lua engine {self.name!r} is closed")
            if self._start_task is None:
                self._load_task_functions()
            finished = self._finished_tasks.pop() if self._finished_tasks else None
            if finished is not None:
                self._task_threads.pop(finished, None)
            spare = self._spare
            if spare is None:
                # Releases `finished` first: after an abort it may be the spare.
                task_id, pointer = self._take_spare(finished)
                finished = None
                spare = (int(task_id), int(pointer, 16))
            task, thread = spare
            self._spare = None
            self._task_threads[task] = thread
            try:
                values = self._guarded(self._call, self._start_task,
                                       (task, finished, target, name, with_self), limit, thread)
            except BaseException:
                self._finished_tasks.append(task)  # started or not: released next time
                raise
            first = values[0]
            if first == "none":
                self._spare = spare
                self._task_threads.pop(task, None)
                return None, "none", None
            if first == "error":
                self._finished_tasks.append(task)
                message, where, full = split_error(str(values[1]))
                raise ScriptError(message, where=where, traceback=full)
            status = values[2]
            if first == task:  # it returned: its coroutine waits for the next start
                self._spare = spare
                self._task_threads.pop(task, None)
                return task, "done", values[3:]
            self._spare = (int(first), int(values[1], 16))
            if status != "sleep":
                self._finished_tasks.append(task)
            if status == "sleep":
                return task, "sleep", values[3]
            if status == "done":
                return task, "done", tuple(values[3:])
            message, where, full = split_error(str(values[3]))
            raise ScriptError(message, where=where, traceback=full)

    def drop_task(self, task: int) -> None:
        """Forget a task that will not be resumed again (no-op when finished)."""
        with self._lock:
            if not self._cs.closed:
                self._drop_task(task)
                self._task_threads.pop(task, None)

    def step(self, task: int, *args: Any, limit: float | None) -> tuple[str, Any]:
        """Resume ``task``: ("sleep", ms) or ("done", (first result,)). Raises like ``call``.

        Only the first result is passed on (all the host reads: a poll's
        delay, on_start's false): passing all of them through tasks.lua's
        varargs copied each one, and a task returning 510,000 values overflowed
        the stack of the thread running the host's call (tasks.lua's settled).

        The task's thread joins the abort chain directly (the host knows it),
        instead of through the prelude's enter/leave callbacks.
        """
        thread = self._task_threads.get(task)
        try:
            values = self._guarded(self._call, self._step, (task, *args), limit, thread)
        except BaseException:
            self._finished_tasks.append(task)
            raise
        status = values[0]
        if status != "sleep":
            self._finished_tasks.append(task)
        if status == "sleep":
            return "sleep", values[1]
        if status == "done":
            return "done", tuple(values[1:])
        message, where, full = split_error(str(values[1]))
        raise ScriptError(message, where=where, traceback=full)

    def table(self, value: Any = None) -> Any:
        """A new Lua table copied from ``value`` (mapping or sequence), or empty."""
        with self._lock:
            if self._cs.closed:
                raise ClosedError(f"Lua engine {self.name!r} is closed")
            if value is None:
                return self._table_from({})
            return self.converter.to_lua(value)

    def host_function(self, func: Callable[..., Any], name: str) -> Any:
        """``func`` as a plain Lua function for scripts (SPEC §4b "nothing of Python shows").

        The only way a Python callable should reach a script: to it, the result
        is a Lua function like any other, and an exception ``func`` raises
        arrives as a Lua string (``moonbus.lua.host_errors``) prefixed with the
        calling script line, ``name`` standing for the function in messages.
        """
        with self._lock:
            if self._cs.closed:
                raise ClosedError(f"Lua engine {self.name!r} is closed")
            return self._host_function(func, name)

    @property
    def held_here(self) -> bool:
        """Whether the calling thread holds the engine's lock (is inside a call of it)."""
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]  # both lock types

    @property
    def in_call(self) -> bool:
        """Whether a call into this engine is running (read by the thread
        holding the engine's lock: a call nested in it sees True)."""
        return bool(self._cs.depth)

    def close(self) -> None:
        """Release the Lua state. Idempotent; waits for a running call to finish.
        Drops every Lua object held here (``_LUA_HELD``, the converter's).

        Called from inside a call of this engine (a host function the script
        called stops its own script: the lock is re-entrant), the engine is
        closed at once (no new call starts) but the Lua code of that call runs
        on, so the objects go when the outermost call ends (``_guarded``)."""
        with self._lock:
            if self._cs.closed:
                return
            self._cs.closed = True
            if not self._cs.depth:
                self._release()

    def _release(self) -> None:
        # Under _lock, closed, no call running: close, or the end of the call
        # that closed it (_guarded, _finish_call). Idempotent.
        if self._call is None:
            return
        for name in _LUA_HELD:
            setattr(self, name, None)
        self.converter.release()
        self._chunks.release()

    @property
    def closed(self) -> bool:
        return self._cs.closed

    def __repr__(self) -> str:
        return f"<LuaEngine {self.name!r}{' closed' if self._cs.closed else ''}>"
