"""``ScriptHost.evaluate``: run a chunk of Lua inside a running script.

For the admin command ``script.eval`` (``moonbus.admin.eval_cmd``): an
operator asks a live script what it holds (``return players_seen``) or nudges
it, the way ``moonbus repl`` evaluates lines in its own script.

Where it runs: the script's **event engine**, in the environment of its
top-level chunk and event handlers, for the reasons ``ScriptHost.call`` gives
(``moonbus.host.script_call``): the main engine is often suspended inside
``poll``. So the chunk sees the script's globals and the sandbox every script
has (the app's APIs, ``shared``, ``events``, ``logger``), and nothing of
Python or the file system. It runs under the engine lock (serialised with
event delivery), the engine's memory limit and ``limit`` seconds (the
handler time limit): ``while true do end`` is cut with ``ScriptTimeout`` and
the script goes on.

Reading follows the ``lua`` prompt: the text is first compiled as an
expression (``return <text>``), else as statements. The values are printed
Lua-style by ``moonbus.lua.value_printer``, tab-separated.

Threads: any (RCON runs admin commands on its worker threads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moonbus.errors import ClosedError, ScriptError, ScriptSyntaxError, ScriptTimeout
from moonbus.host.script_call import enter_host_call
from moonbus.lua.value_printer import FORMATTER

if TYPE_CHECKING:
    from moonbus.host.engine_side import ScriptEngine

__all__ = ["CHUNK_NAME", "NO_VALUE", "eval_in_engine"]

#: The chunk name errors show (``=(eval):1: ...``).
CHUNK_NAME = "(eval)"
#: The answer for a chunk that returned nothing.
NO_VALUE = "(no value)"


def eval_in_engine(side: ScriptEngine | None, script: str, status: str, source: str,
                   limit: float | None, width: int) -> str:
    """Run ``source`` in ``side`` (a script's event engine); its values printed."""
    what = f"script {script!r}: eval"
    if side is None or status not in ("starting", "running"):
        raise ScriptError(f"{what}: the script is {status}, not running")
    engine = side.engine
    try:
        with engine.lock:
            enter_host_call(side, limit)
            try:
                func = engine.compile("return " + source, CHUNK_NAME, side.env, limit=limit)
            except ScriptSyntaxError:
                func = engine.compile(source, CHUNK_NAME, side.env, limit=limit)
            # The printer gets its own environment: nothing of it is left in the script's.
            maker = engine.compile(FORMATTER, "(eval printer)", engine.new_env(), limit=limit)
            printer = engine.call(maker, limit=limit)[0]
            count, text = engine.call(printer, func, width, limit=limit)
    except ClosedError as exc:
        raise ScriptError(f"{what}: the script stopped") from exc
    except ScriptTimeout as exc:
        raise ScriptTimeout(f"{what}: {exc}", where=exc.where,
                            traceback=exc.lua_traceback) from exc
    except ScriptError as exc:
        raise type(exc)(f"{what}: {exc}", where=exc.where, traceback=exc.lua_traceback) from exc
    return str(text) if count else NO_VALUE
