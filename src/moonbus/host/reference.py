"""The script author's reference: every global a script sees, in one place.

Why a Python catalogue and not hand-written prose: the scripting reference in
the docs (``docs/scripting.md``, rendered by ``docs/hooks.py``), the LuaLS
definition files that ``moonbus stubs`` writes and the test that walks the
sandbox (``tests/host/test_reference.py``) all read this one table, so a
global added to the sandbox without a line here fails a test, and a line here
for a global that no longer exists fails it too (Factorio's and Roblox's
references are generated from one machine-readable source for the same
reason).

Only moonbus's own globals are described; the host application's APIs (the
demo world's ``players``, your game's globals) are described by their
``@lua_api`` classes' docstrings and type hints.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LuaFunction:
    """One function or method a script can call.

    ``params`` and ``returns`` use LuaLS type names (``string``, ``integer``,
    ``number``, ``boolean``, ``table``, ``any``, ``fun(...)``); ``engines`` is
    ``"both"``, ``"main"`` or ``"event"`` where the function behaves
    differently per engine.
    """

    name: str
    params: tuple[tuple[str, str], ...]
    returns: str
    summary: str
    method: bool = True
    engines: str = "both"

    def signature(self, owner: str) -> str:
        """``events:on(name, fn)``-style text for the docs."""
        sep = ":" if self.method else "."
        args = ", ".join(p for p, _ in self.params)
        prefix = f"{owner}{sep}" if owner else ""
        return f"{prefix}{self.name}({args})"


@dataclass(frozen=True)
class LuaGlobal:
    """A global table (``events``), function (``sleep``) or value (``options``)."""

    name: str
    kind: str  # "library" | "function" | "value"
    summary: str
    functions: tuple[LuaFunction, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()  # (name, LuaLS type, summary)
    call: LuaFunction | None = None  # for kind == "function"


@dataclass(frozen=True)
class SharedKind:
    """One kind of shared value (``shared:int(name)`` and its handle's methods)."""

    name: str
    lua_type: str
    functions: tuple[LuaFunction, ...]


def _f(
    name: str,
    params: tuple[tuple[str, str], ...],
    returns: str,
    summary: str,
    *,
    method: bool = True,
    engines: str = "both",
) -> LuaFunction:
    return LuaFunction(name, params, returns, summary, method, engines)


EVENTS = LuaGlobal(
    "events",
    "library",
    "Subscribe to events and emit your own. Handlers registered while the chunk "
    "loads run in the event engine at once; handlers registered from on_start/poll "
    "run deferred in the main engine, between polls, in seq order.",
    functions=(
        _f("on", (("name", "string"), ("fn", "fun(e: table)")), "integer",
           'Calls fn for every event named name ("*" for all, "prefix:*" for a '
           "prefix); returns an id for off."),
        _f("once", (("name", "string"), ("fn", "fun(e: table)")), "integer",
           "Like on, but the handler is removed after its first event."),
        _f("off", (("id_or_name", "integer|string"), ("fn", "fun(e: table)?")), "boolean",
           "Removes a handler by id, or every handler of name that is fn."),
        _f("emit", (("name", "string"), ("data", "table?")), "nil",
           "Emits a custom event (committed, logged and delivered like any other); "
           "data is copied, string keys and plain values only; data larger than "
           "max_emit_size (32 KiB) is an error (see Limits)."),
    ),
    fields=(("EventType", "table<string, string>",
             "The declared event names: EventType.TICK == \"tick\" and so on."),),
)

LOGGER = LuaGlobal(
    "logger",
    "library",
    "Log lines tagged with the script's name, engine and tick; long lines are cut "
    "with a marker (see Limits).",
    functions=tuple(
        _f(level, (("...", "any"),), "nil",
           f"Logs its arguments (tostring, space-separated) at {level} level.")
        for level in ("debug", "info", "warn", "error")
    ),
)

STATS = LuaGlobal(
    "stats",
    "library",
    "The key/value panel an operator watches while the script runs (the CLI panel, "
    "the summary, admin `scripts`).",
    functions=(
        _f("set", (("key", "string"), ("value", "string|number|boolean|nil")), "nil",
           "Sets one panel entry (nil removes it); at most 256 keys and 4 KiB "
           "string values, past them an error and nothing stored (see Limits)."),
        _f("get", (("key", "string"),), "any", "Reads one panel entry back."),
        _f("clear", (), "nil", "Removes every panel entry."),
    ),
)

SHARED_KINDS: tuple[SharedKind, ...] = (
    SharedKind("int", "integer", (
        _f("get", (), "integer", "The value (0 when fresh)."),
        _f("set", (("v", "integer"),), "nil", "Sets the value."),
        _f("increment", (), "integer", "Adds 1 atomically; returns the new value."),
        _f("decrement", (), "integer", "Subtracts 1 atomically; returns the new value."),
        _f("add", (("n", "integer"),), "integer", "Adds n atomically; overflow is an error."),
        _f("subtract", (("n", "integer"),), "integer", "Subtracts n atomically."),
    )),
    SharedKind("float", "number", (
        _f("get", (), "number", "The value (0.0 when fresh)."),
        _f("set", (("v", "number"),), "nil", "Sets the value."),
        _f("add", (("n", "number"),), "number", "Adds n atomically; returns the new value."),
    )),
    SharedKind("string", "string", (
        _f("get", (), "string", 'The value ("" when fresh).'),
        _f("set", (("v", "string"),), "nil", "Sets the value (size-limited, 1 MiB by default)."),
        _f("append", (("s", "string"),), "string", "Appends atomically; returns the new value."),
    )),
    SharedKind("bool", "boolean", (
        _f("get", (), "boolean", "The value (false when fresh)."),
        _f("set", (("v", "boolean"),), "nil", "Sets the value."),
        _f("toggle", (), "boolean", "Flips atomically; returns the new value."),
    )),
    SharedKind("table", "table", (
        _f("get", (("key", "string"),), "any", "One entry (nil when missing)."),
        _f("set", (("key", "string"), ("v", "any")), "nil",
           "Sets one entry (tables are copied; cycles and deep nesting refused)."),
        _f("contains", (("key", "string"),), "boolean", "Whether the entry exists."),
        _f("remove", (("key", "string"),), "boolean", "Removes one entry."),
        _f("clear", (), "nil", "Removes every entry."),
        _f("keys", (), "string[]", "The entry names."),
        _f("to_table", (), "table", "An independent snapshot of the whole table."),
        _f("increment", (("key", "string"), ("n", "integer?")), "integer",
           "Adds n (default 1) to one entry atomically; returns the new value."),
    )),
)

SHARED = LuaGlobal(
    "shared",
    "library",
    "Typed values with atomic operations, shared by both engines, Python and (with "
    "Redis) other processes; the one way across the two engines. Asking for an "
    "existing name with another kind is an error naming the key and both kinds.",
    functions=(
        *(
            _f(kind.name, (("name", "string"),), f"moonbus.Shared{kind.name.capitalize()}",
               f"A handle on the {kind.name} value called name.")
            for kind in SHARED_KINDS
        ),
        _f("contains", (("name", "string"),), "boolean", "Whether a value of that name exists."),
        _f("remove", (("name", "string"),), "boolean", "Removes one value."),
        _f("clear", (), "nil", "Removes every value of this script's namespace."),
    ),
)

OPTIONS = LuaGlobal(
    "options",
    "value",
    "The script's options (manifest defaults overridden by --option / load(options=...)), "
    "read-only.",
)

SLEEP = LuaGlobal(
    "sleep",
    "function",
    "Main engine: suspends the script for ms milliseconds (no thread is parked) and "
    "raises 'script stopped' at once when the script is stopped. Event engine: an error.",
    call=_f("sleep", (("ms", "number"),), "boolean", "Sleeps ms milliseconds.",
            method=False, engines="main"),
)

TIME = LuaGlobal(
    "time",
    "function",
    "The current game tick (nil before the first tick).",
    call=_f("time", (), "integer?", "The current tick.", method=False),
)

PRINT = LuaGlobal(
    "print",
    "function",
    "Same as logger.info.",
    call=_f("print", (("...", "any"),), "nil", "Logs at info level.", method=False),
)

REQUIRE = LuaGlobal(
    "require",
    "function",
    "Folder scripts only: loads name.lua from the script's own folder (once).",
    call=_f("require", (("name", "string"),), "any", "Loads a module of the script's folder.",
            method=False),
)

MOONBUS_GLOBALS: tuple[LuaGlobal, ...] = (
    EVENTS, LOGGER, OPTIONS, PRINT, REQUIRE, SHARED, SLEEP, STATS, TIME
)

# Lua 5.4's standard globals that stay in the sandbox, with what differs.
STANDARD_FUNCTIONS: dict[str, str] = {
    "assert": "standard",
    "collectgarbage": 'only "collect" (the default), "count", "step" and "isrunning"; '
                      "other options are refused",
    "error": "standard",
    "getmetatable": "standard; the string metatable and moonbus's own objects are protected",
    "ipairs": "standard",
    "load": "text chunks only, in a sandboxed environment, under the time limit "
            "and the source size limit",
    "next": "standard",
    "pairs": "standard",
    "pcall": "standard; cannot catch a time-limit abort",
    "rawequal": "standard",
    "rawget": "standard",
    "rawlen": "standard",
    "rawset": "standard",
    "select": "standard",
    "setmetatable": "standard; __gc is refused",
    "tonumber": "standard",
    "tostring": "standard",
    "type": "standard",
    "unpack": "alias of table.unpack (Lua 5.1 compatibility)",
    "xpcall": "standard; cannot catch a time-limit abort",
}

STANDARD_VALUES: dict[str, str] = {
    "_G": "the script's own global table (not the host's)",
    "_VERSION": 'the Lua version, "Lua 5.4"',
}

# Standard libraries and the members each keeps in the sandbox.
STANDARD_LIBRARIES: dict[str, tuple[tuple[str, ...], str]] = {
    "string": (
        ("byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match",
         "pack", "packsize", "rep", "reverse", "sub", "unpack", "upper",
         "contains", "ends_with", "split", "starts_with", "trim"),
        "Lua's string library (no dump). Pattern functions fall back to a pure-Lua "
        "matcher when a pattern could run long; rep/format are bounded. moonbus adds "
        "s:contains(x), s:starts_with(x), s:ends_with(x), s:split(sep) (a list) and "
        "s:trim().",
    ),
    "table": (
        ("concat", "insert", "move", "pack", "remove", "sort", "unpack"),
        "Lua's table library, bounded against lying __len metamethods.",
    ),
    "math": (
        ("abs", "acos", "asin", "atan", "ceil", "cos", "deg", "exp", "floor", "fmod",
         "huge", "log", "max", "maxinteger", "min", "mininteger", "modf", "pi", "rad",
         "random", "randomseed", "sin", "sqrt", "tan", "tointeger", "type", "ult"),
        "Lua's math library.",
    ),
    "os": (
        ("clock", "date", "difftime", "time"),
        "Only the clock functions: no execute, exit, getenv, remove, rename, tmpname.",
    ),
    "coroutine": (
        ("close", "create", "isyieldable", "resume", "running", "status", "wrap", "yield"),
        "Lua's coroutine library; the host's own lifecycle coroutines cannot be resumed "
        "or closed by a script.",
    ),
    "utf8": (
        ("char", "charpattern", "codepoint", "codes", "len", "offset"),
        "Lua's utf8 library.",
    ),
}

REMOVED: tuple[str, ...] = (
    "io", "package", "debug", "dofile", "loadfile", "os.execute", "os.exit", "os.getenv",
    "os.remove", "os.rename", "os.tmpname", "string.dump", "python",
)


@dataclass(frozen=True)
class Reference:
    """The whole catalogue, for renderers (docs, LuaLS stubs) and tests."""

    moonbus: tuple[LuaGlobal, ...] = MOONBUS_GLOBALS
    shared_kinds: tuple[SharedKind, ...] = SHARED_KINDS
    standard_functions: dict[str, str] = field(default_factory=lambda: dict(STANDARD_FUNCTIONS))
    standard_values: dict[str, str] = field(default_factory=lambda: dict(STANDARD_VALUES))
    standard_libraries: dict[str, tuple[tuple[str, ...], str]] = field(
        default_factory=lambda: dict(STANDARD_LIBRARIES)
    )
    removed: tuple[str, ...] = REMOVED

    def global_names(self) -> set[str]:
        """Every global name the catalogue describes (host APIs excluded)."""
        return (
            {g.name for g in self.moonbus}
            | set(self.standard_functions)
            | set(self.standard_values)
            | set(self.standard_libraries)
        )
