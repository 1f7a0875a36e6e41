"""What the shared store accepts, as pure functions shared by every backend.

Each check takes the shared name (and the operation) only to build an error
message that names them; none touches a backend, takes a lock or keeps state,
so any thread may call them, and backends call them *before* entering their
critical section (copies and validation of large tables never run under a lock).

Canonical stored values, the same for every backend:

- int: a Python ``int`` in the signed 64-bit range (bool is not an int here);
- float: a finite Python ``float`` (NaN and infinities are refused, so values
  survive JSON, Redis and Lua alike);
- string: a ``str`` that encodes to UTF-8 in at most ``max_string_bytes`` bytes;
- bool: ``True`` / ``False``;
- table: a ``dict[str, canonical]``. Keys are strings; int keys become their
  decimal string; a ``list``/``tuple`` becomes a table with keys ``"1".."n"``
  (Lua style). Nesting is limited to ``max_depth`` tables counting the shared
  table itself, and a container that contains itself is refused as a cycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from moonbus.errors import SharedValueError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_STRING_BYTES",
    "INT_MAX",
    "INT_MIN",
    "KINDS",
    "Kind",
    "SharedLimits",
    "as_sequences",
    "check_bool",
    "check_float",
    "check_int",
    "check_name",
    "check_string",
    "copy_value",
    "float_overflow_error",
    "int_operand_error",
    "kind_of",
    "normalize_table_value",
    "overflow_error",
    "table_key",
    "utf8_size",
]

Kind = Literal["int", "float", "string", "bool", "table"]
KINDS: Final[tuple[Kind, ...]] = ("int", "float", "string", "bool", "table")

INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
DEFAULT_MAX_STRING_BYTES: Final = 1 << 20
DEFAULT_MAX_DEPTH: Final = 32

_KIND_BY_TYPE: Final[dict[type, Kind]] = {
    int: "int",
    float: "float",
    str: "string",
    bool: "bool",
    dict: "table",
}


@dataclass(frozen=True, slots=True)
class SharedLimits:
    """Per-store limits. ``max_string_bytes`` bounds every string (values, table
    keys and strings nested in tables) in UTF-8 bytes; ``max_depth`` bounds table
    nesting, counting the shared table itself as level 1."""

    max_string_bytes: int = DEFAULT_MAX_STRING_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        for field, value, low in (
            ("max_string_bytes", self.max_string_bytes, 0),
            ("max_depth", self.max_depth, 1),
        ):
            if type(value) is not int or value < low:
                raise SharedValueError(f"{field} must be an integer >= {low}, got {value!r}")


def kind_of(value: object) -> Kind:
    """The kind of a canonical stored value."""
    return _KIND_BY_TYPE[type(value)]


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def check_name(name: object) -> str:
    """A shared name (or namespace) must be a non-empty, UTF-8 encodable str."""
    if type(name) is not str or not name:
        raise SharedValueError(f"a shared name must be a non-empty string, got {_describe(name)}")
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SharedValueError(f"shared name {name!r} is not valid UTF-8 text") from exc
    return name


def overflow_error(name: str, op: str, current: int | None, n: int) -> SharedValueError:
    """The error for an int result outside the signed 64-bit range."""
    was = "" if current is None else f" (value is {current})"
    return SharedValueError(
        f"shared int {name!r}: {op}({n}) would leave the 64-bit range "
        f"[{INT_MIN}, {INT_MAX}]{was}; value unchanged"
    )


def int_operand_error(name: str, op: str, n: object) -> SharedValueError:
    """The error for an int operand that is not an ``int`` (bools and floats included).

    Operands of any size are accepted: only the *result* must fit in 64 bits.
    """
    return SharedValueError(f"shared int {name!r}: {op} needs an integer, got {_describe(n)}")


def float_overflow_error(name: str, current: float, x: float) -> SharedValueError:
    """The error for a float ``add`` whose result is not finite."""
    return SharedValueError(
        f"shared float {name!r}: add({x}) to {current} is not a finite number; value unchanged"
    )


def check_int(name: str, op: str, n: object) -> int:
    """An int value to store: a real ``int`` (not bool, not float) within 64 bits."""
    if type(n) is not int:
        raise int_operand_error(name, op, n)
    if not INT_MIN <= n <= INT_MAX:
        raise SharedValueError(
            f"shared int {name!r}: {op}({n}) is outside the 64-bit range [{INT_MIN}, {INT_MAX}]"
        )
    return n


def check_float(name: str, op: str, x: object) -> float:
    """A float operand: an int or float (not bool) that is a finite double."""
    if type(x) is float:
        value = x
    elif type(x) is int:
        try:
            value = float(x)
        except OverflowError as exc:
            raise SharedValueError(
                f"shared float {name!r}: {op}({x}) is too large for a double"
            ) from exc
    else:
        raise SharedValueError(f"shared float {name!r}: {op} needs a number, got {_describe(x)}")
    if not math.isfinite(value):
        raise SharedValueError(f"shared float {name!r}: {op}({value}) is not a finite number")
    return value


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (fast for ASCII); raises UnicodeEncodeError."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8"))


def check_string(name: str, op: str, text: object, max_bytes: int, what: str = "string") -> str:
    """A string operand: a ``str`` that is valid UTF-8 and within ``max_bytes``."""
    if type(text) is not str:
        raise SharedValueError(
            f"shared {what} {name!r}: {op} needs a string, got {_describe(text)}"
        )
    if len(text) > max_bytes:
        size = len(text)
    else:
        try:
            size = utf8_size(text)
        except UnicodeEncodeError as exc:
            raise SharedValueError(
                f"shared {what} {name!r}: {op} got text that is not valid UTF-8 ({exc.reason})"
            ) from exc
    if size > max_bytes:
        raise SharedValueError(
            f"shared {what} {name!r}: {op} would hold at least {size} bytes, "
            f"over the limit of {max_bytes}"
        )
    return text


def check_bool(name: str, op: str, flag: object) -> bool:
    """A bool operand: exactly ``True`` or ``False``."""
    if type(flag) is not bool:
        raise SharedValueError(
            f"shared bool {name!r}: {op} needs true or false, got {_describe(flag)}"
        )
    return flag


def table_key(name: str, key: object, limits: SharedLimits) -> str:
    """A table key: a ``str``, or an ``int`` (not bool) turned into its decimal string."""
    if type(key) is str:
        return check_string(name, "key", key, limits.max_string_bytes, "table")
    if type(key) is int:
        return str(key)
    raise SharedValueError(
        f"shared table {name!r}: keys must be strings or integers, got {_describe(key)}"
    )


def _path_text(path: list[str]) -> str:
    return "".join(f"[{p!r}]" for p in path)


def normalize_table_value(name: str, key: str, value: object, limits: SharedLimits) -> Any:
    """Validate ``value`` for ``table[key]`` and return an independent canonical copy.

    ``None`` is not a value (in Lua, assigning nil removes the key; the table
    handle's ``set`` maps ``None`` to ``remove`` before calling this).
    """
    return _normalize(name, [key], value, 1, set(), limits)


def _normalize(
    name: str, path: list[str], value: object, depth: int, active: set[int], limits: SharedLimits
) -> Any:
    kind = type(value)
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:  # type: ignore[operator]
            raise SharedValueError(
                f"shared table {name!r}: int at {_path_text(path)} is outside the 64-bit range"
            )
        return value
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise SharedValueError(
                f"shared table {name!r}: float at {_path_text(path)} is not finite ({value})"
            )
        return value
    if kind is bool:
        return value
    if kind is str:
        where = f"value at {_path_text(path)}"
        return check_string(name, where, value, limits.max_string_bytes, "table")
    if isinstance(value, Mapping):
        items: list[tuple[object, object]] = list(value.items())
    elif isinstance(value, list | tuple):
        items = [(i, v) for i, v in enumerate(value, start=1)]
    else:
        raise SharedValueError(
            f"shared table {name!r}: value at {_path_text(path)} has unsupported type "
            f"{type(value).__name__} (use int, float, str, bool, dict or list)"
        )
    marker = id(value)
    if marker in active:
        raise SharedValueError(f"shared table {name!r}: value at {_path_text(path)} is a cycle")
    if depth + 1 > limits.max_depth:
        raise SharedValueError(
            f"shared table {name!r}: value at {_path_text(path)} nests tables deeper than "
            f"the limit of {limits.max_depth}"
        )
    active.add(marker)
    out: dict[str, Any] = {}
    for raw_key, raw_value in items:
        if raw_value is None:
            raise SharedValueError(
                f"shared table {name!r}: value at {_path_text([*path, str(raw_key)])} is None "
                "(nil cannot be stored inside a table)"
            )
        sub_key = table_key(name, raw_key, limits)
        if sub_key in out:
            raise SharedValueError(
                f"shared table {name!r}: table at {_path_text(path)} has key {sub_key!r} twice "
                "(an int key and its string form)"
            )
        out[sub_key] = _normalize(name, [*path, sub_key], raw_value, depth + 1, active, limits)
    active.discard(marker)
    return out


def copy_value(value: Any) -> Any:
    """An independent copy of a canonical value (only tables need copying)."""
    if type(value) is dict:
        return {k: copy_value(v) for k, v in value.items()}
    return value


def as_sequences(value: Any) -> Any:
    """A stored table as Lua gets it back (scripts and runner jobs alike): keys
    stay strings, except that a table whose keys are "1".."n" (how a list is
    stored, above) comes back as a list, at every level."""
    if isinstance(value, dict):
        items = {k: as_sequences(v) for k, v in value.items()}
        n = len(items)
        numbered = n and all(isinstance(k, str) and k.isdigit() for k in items)
        if numbered and sorted(int(k) for k in items) == list(range(1, n + 1)):
            return [items[str(i)] for i in range(1, n + 1)]
        return items
    return value
