"""Guarded calls: the abort-token protocol every call into a Lua state runs under.

``GuardedCalls`` is the part of ``LuaEngine`` (``engine.py``) that runs Lua
under the limits: ``call``, the event hot path ``call_event``, ``_guarded``
(token, watchdog arm, depth, the call, then ``_end_call``), nested calls
from a Python API back into the same engine, and ``abort`` from any thread.
It is a base class of the engine, not an object of its own, so a call goes
through no extra Python layer; the C delivery (``fastcall.py``) follows the
same steps on the same ``call_state`` and is handed ``_finish_call`` and
``_abort_on_entry``. How a call ended becomes values or exceptions in
``call_outcome.py``.

How an abort works: every Lua thread of the state (the main thread and each
coroutine, registered at creation by the prelude) has the deadline hook
function registered with an empty mask. ``abort`` switches on a count hook of
1 with ``lua_sethook`` for the main thread and for every coroutine currently
being resumed or closed (the prelude reports enter/leave). From then on every
Lua instruction in those threads raises "time limit exceeded": ``pcall``,
``xpcall``, error objects with looping ``__tostring`` and coroutines cannot
keep running, because the next instruction raises again. ``__gc``
metamethods (during which Lua disables hooks) are refused by the sandbox's
``setmetatable``. When the call has unwound, the hook is removed again, also
from coroutines whose resume never returned normally (the prelude keeps them
alive until then, so no pointer in ``_chain`` outlives its coroutine).

Threads: the owner thread (holding ``_lock``) runs calls; ``abort`` may come
from any thread and takes ``_hook_lock`` only; the prelude's enter/leave
callbacks run on the owner thread, inside a call. The attributes are set by
``LuaEngine.__init__``.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import get_native_id as _native_id
from typing import Any

from moonbus.errors import ClosedError, ScriptMemoryError
from moonbus.lua.call_outcome import CallOutcome
from moonbus.lua.call_state import CallState, EngineLock
from moonbus.lua.convert import LuaConverter
from moonbus.lua.hooks import HookControl
from moonbus.lua.lua_room import argument_cost
from moonbus.lua.value_path import payload_error
from moonbus.lua.watchdog import Abortable, Entry, Watchdog

__all__ = ["IN_PLACE_SCALARS", "GuardedCalls"]

_PLAIN = frozenset((str, int, float, bool, type(None)))
# Argument types lupa pushes without allocating (see ``call``): each engine's
# ``_in_place`` starts from these, and lupa's Lua object types join when met.
IN_PLACE_SCALARS: frozenset[type] = frozenset((int, float, bool, type(None)))


class GuardedCalls(CallOutcome):
    """Calls into one Lua state under the time limit and the abort protocol."""

    # Set by LuaEngine.__init__ (annotations only: no class attributes).
    _cs: CallState
    _lock: EngineLock
    _hook_lock: EngineLock
    _chain: list[int]
    _hooks: HookControl
    _watchdog: Watchdog
    _armed: dict[Abortable, Entry]
    _clock: Any
    _state: int
    _call: Any
    _forget: Any
    _frozen_mappings: frozenset[type]
    _table_from: Any
    _in_place: set[type]  # IN_PLACE_SCALARS and the Lua object types met (owner thread)
    converter: LuaConverter
    # LuaEngine._release: drops the state's objects (under the lock, closed, idle).
    _release: Callable[[], None]

    # -------------------------------------------------------------- coroutines
    def _enter(self, pointer: str) -> None:
        state = int(pointer, 16)
        with self._hook_lock:
            self._chain.append(state)
            if self._cs.abort_reason is not None:
                self._hooks.arm(state)

    def _leave(self, pointer: str) -> None:
        state = int(pointer, 16)
        with self._hook_lock:
            if self._chain and self._chain[-1] == state:
                self._chain.pop()
            elif state in self._chain:
                self._chain.remove(state)
            if self._cs.abort_reason is not None:
                self._hooks.disarm(state)

    # ------------------------------------------------------------------- abort
    def abort(self, token: int, reason: str) -> bool:
        """Abort call ``token`` (from any thread); True if it was running and is now aborting.

        ``token`` may also be that of a call that has not started yet (see
        ``next_token``): it is recorded, and that call aborts itself as it
        starts (``_guarded``), before running any Lua; this returns False then.
        A stale token (a call that ended) is recorded too, harmlessly: tokens
        only grow, so it never matches again, and a later token is never
        replaced by an earlier one.
        """
        cs = self._cs
        with self._hook_lock:
            if token >= cs.token and token > cs.pending_token:
                # Recorded before the live check: if the owner starts the call
                # after this store, it sees it; if before, the check below does.
                cs.pending_token = token
                cs.pending_reason = reason
            if not cs.in_call or token != cs.token or cs.abort_reason is not None:
                return False
            self._arm(reason)
            return True

    def _arm(self, reason: str) -> None:
        # Under _hook_lock, during a call.
        self._cs.abort_reason = reason
        self._hooks.arm(self._state)
        for state in self._chain:
            self._hooks.arm(state)

    def _abort_on_entry(self, token: int) -> None:
        # Owner thread, call ``token`` just marked live: an abort recorded for it
        # before it started takes effect now (unless abort() already armed it).
        cs = self._cs
        with self._hook_lock:
            reason = cs.pending_reason
            if cs.abort_reason is None and reason is not None and cs.token == token:
                self._arm(reason)

    def next_token(self) -> int:
        """Token the next top-level call will get (owner thread, between calls).

        Lets a canceller be told the token before the call starts: ``abort``
        accepts it at once, and the call aborts as it starts.
        """
        return self._cs.token + 1

    # ------------------------------------------------------------------- calls
    def call(self, func: Any, *args: Any, limit: float | None) -> tuple[Any, ...]:
        """Run ``func(*args)`` under the limits; return its results as a tuple.

        Raises ``ScriptTimeout`` (time limit), ``ScriptCancelled`` (aborted
        from outside), ``ScriptMemoryError`` or ``ScriptError`` (with the Lua
        traceback). Nested calls on the same thread share the outer deadline.
        Arguments that do not fit in the state's free memory (strings are
        copied, other Python objects wrapped in a new userdata) raise
        ``ScriptMemoryError`` before Lua runs: lupa pushes the arguments
        unprotected, where a memory error aborts the process (``lua_room``).
        """
        for arg in args:
            kind = type(arg)
            if kind in self._in_place:
                continue
            if self._lua.lua_type(arg) is not None:  # a Lua object: a registry read
                self._in_place.add(kind)
                continue
            # Measured under the engine's lock (reentrant; _guarded takes it
            # again): measured before it, another thread's call could fill
            # the state between the check and the push (a panic).
            with self._lock:
                if not self._cs.closed:  # closed: _guarded says so
                    self._admit_arguments(args)
                return self._guarded(self._call, func, args, limit)
        return self._guarded(self._call, func, args, limit)

    def _admit_arguments(self, args: tuple[Any, ...]) -> None:
        # Not lua_cost: lupa copies no container argument (a list is a userdata).
        room = self.converter.room
        free = room.free()
        if free is None:
            return
        cost = argument_cost(args, self._in_place)
        if cost > free[0] and room.collected(cost, free[1]):  # the last call's garbage
            free = room.free() or free
        if cost > free[0]:
            refused = room.refused(cost, *free)
            raise ScriptMemoryError(f"call arguments: {refused}") from refused

    def call_event(
        self,
        func: Any,
        sub_id: int,
        data: Any,
        tick: int | None,
        seq: int,
        event_type: str,
        *,
        limit: float | None,
    ) -> tuple[Any, ...]:
        """Event-delivery hot path: ``func(sub_id, <data as a new table>, tick, seq,
        event_type)`` where ``func`` runs its own ``xpcall`` with ``message_handler``
        and returns ``(ok, ...)`` (no trampoline frame on the hot path).

        The payload is converted under the same lock hold as the call. Plain
        payloads (scalar values) are copied by lupa in C; anything else goes
        through the converter.
        """
        lock = self._lock
        lock.acquire()
        try:
            if self._cs.closed:
                raise ClosedError(f"Lua engine {self.name!r} is closed")
            chars = 0
            for key, value in data.items():
                kind = type(value)
                if kind not in _PLAIN:
                    table = self.converter.to_lua(data)
                    break
                chars += (len(value) if kind is str else 0) + (len(key) if type(key) is str else 0)
            else:  # lupa copies it unprotected: it must fit first (lua_room). A plain
                self.converter.room.admit_plain(data, chars)  # dict copies ~30% faster
                # than a read-only mapping (lupa's dict fast path); .copy() is one C call.
                table = self._table_from(
                    data.copy() if type(data) in self._frozen_mappings else data
                )
            return self._guarded(None, func, (sub_id, table, tick, seq, event_type), limit)
        except (OverflowError, TypeError) as exc:  # the data could not go to Lua
            # (lupa raises OverflowError for an int Lua cannot hold): name the field.
            raise TypeError(payload_error(event_type, seq, data, tick, exc)) from exc
        finally:
            lock.release()

    def _end_call(self, host_thread: int | None = None) -> bool:
        # Serialises with a concurrent abort(): after this, no hook can be armed
        # on an idle engine. Returns whether coroutines were left mid-resume.
        cs = self._cs
        with self._hook_lock:
            cs.in_call = False
            reason = cs.last_reason = cs.abort_reason
            if reason is not None:
                self._hooks.disarm(self._state)
                cs.abort_reason = None
            if host_thread is not None:
                # The host's task thread: still alive (see new_task), so its
                # hook can be reset here; it is not the prelude's to forget.
                if reason is not None:
                    self._hooks.disarm(host_thread)
                if host_thread in self._chain:
                    self._chain.remove(host_thread)
            leftover = bool(self._chain)
            if leftover:
                self._chain.clear()
        return leftover

    def _finish_call(self, host_thread: int | None = None) -> None:
        # _end_call; then a resume that never returned normally (abort, error),
        # whose coroutine may still be armed: Lua resets and releases it (the
        # prelude kept it alive until now). The C delivery's end of an unusual
        # call, or of one that closed its own engine (released now, as _guarded does).
        if self._end_call(host_thread):
            self._forget()
        if self._cs.closed:
            self._release()

    def _guarded(
        self,
        invoker: Any,
        func: Any,
        args: tuple[Any, ...],
        limit: float | None,
        host_thread: int | None = None,
    ) -> tuple[Any, ...]:
        # The hot path of event delivery: the token is bumped without
        # ``_hook_lock`` (``abort`` compares it only while ``_in_call`` is set,
        # and only this thread writes both), and the lock is taken once at the
        # end, where it must serialise with a concurrent ``abort``.
        lock = self._lock
        cs = self._cs
        lock.acquire()
        try:
            if cs.closed:
                raise ClosedError(f"Lua engine {self.name!r} is closed")
            if cs.depth:
                return self._nested_call(invoker, func, args, limit)
            if host_thread is not None:
                # Joins the chain before the call is marked live, so an abort
                # (which needs _in_call) always sees it; only this thread writes.
                self._chain.append(host_thread)
            cs.token = token = cs.token + 1
            cs.in_call = True
            if cs.pending_token == token:  # aborted before it started
                self._abort_on_entry(token)
            watchdog = self._watchdog
            armed = self._armed
            if limit is not None:  # Watchdog.arm, inlined (hot path)
                armed[self] = (self._clock(), limit, token, _native_id())
                if watchdog.idle:
                    watchdog.wake()
            cs.depth = 1
            failure: BaseException | None = None
            result: Any = None
            try:
                result = invoker(func, *args) if invoker is not None else func(*args)
            except self._lua.LuaError as exc:  # LuaMemoryError is a subclass
                failure = exc
            finally:
                cs.depth = 0
                if limit is not None:
                    armed.pop(self, None)
                if self._end_call(host_thread):  # as _finish_call, inlined (hot path)
                    self._forget()
            reason = cs.last_reason
            if reason is None and failure is None:
                if result is True:
                    return ()
                if type(result) is tuple and result[0] is True:
                    return result[1:]
            return self.outcome(result, failure, reason, limit)
        finally:
            if cs.closed and not cs.depth:  # closed from inside this call (LuaEngine.close)
                self._release()
            lock.release()

    def _nested_call(
        self, invoker: Any, func: Any, args: tuple[Any, ...], limit: float | None
    ) -> tuple[Any, ...]:
        # A Python API called from Lua called back into this engine: same
        # thread, same deadline as the outer call.
        self._cs.depth += 1
        failure: BaseException | None = None
        result: Any = None
        try:
            result = invoker(func, *args) if invoker is not None else func(*args)
        except self._lua.LuaError as exc:
            failure = exc
        finally:
            self._cs.depth -= 1
        return self.outcome(result, failure, self._cs.abort_reason, limit)
