"""The Redis backend's handles: validate locally, run one atomic command, decode.

Each method validates its operands in the calling thread (the same checks as
the memory backend, from ``values.py``), then sends exactly one command
through the backend's ``CommandBatcher``: an ``EVALSHA`` of a script from
``redis_scripts`` for every write (and for reads that need a kind check plus
more than one field), or one plain read command. Error replies of the scripts
(``MOONBUS ...``) become the same errors the memory backend raises.

Retries: reads (``get``, ``contains``, ``keys``, ``to_table``) are marked
retry-safe; every write is not, so a write whose reply was lost fails with
``SharedBackendError`` instead of risking a second application (see
``redis_batch``). Thread safety: any thread, any number at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from moonbus.errors import SharedBackendError, SharedTypeError, SharedValueError
from moonbus.redisio.batch import CommandBatcher, Op, ReplyError, ScriptRef, pack, pack_args
from moonbus.shared.handles import SharedBool, SharedFloat, SharedInt, SharedString, SharedTable
from moonbus.shared.redis_scripts import (
    decode_field,
    encode_field,
    field_kind,
    float_text,
    index_key,
    split_delta,
    value_key,
)
from moonbus.shared.values import (
    Kind,
    SharedLimits,
    check_bool,
    check_float,
    check_int,
    check_string,
    float_overflow_error,
    int_operand_error,
    normalize_table_value,
    overflow_error,
    table_key,
)

__all__ = [
    "RedisBool",
    "RedisContext",
    "RedisFloat",
    "RedisHandle",
    "RedisInt",
    "RedisString",
    "RedisTable",
]


@dataclass(frozen=True, slots=True)
class RedisContext:
    """What every handle of one Redis backend shares."""

    batcher: CommandBatcher
    prefix: str
    limits: SharedLimits
    scripts: dict[str, ScriptRef]
    url: str


class RedisHandle:
    """Base of every Redis handle: its keys, and how it talks to Redis."""

    __slots__ = ("_ctx", "_heads", "_index", "_key", "_name_bytes", "name")
    kind: Kind

    def __init__(self, name: str, ctx: RedisContext, namespace: str) -> None:
        self.name = name
        self._ctx = ctx
        self._key = value_key(ctx.prefix, namespace, name)
        self._index = index_key(ctx.prefix, namespace)
        self._name_bytes = name.encode("utf-8")
        self._heads: dict[str, bytes] = {}

    def _payload(self, script: str, argv: tuple[bytes, ...]) -> bytes:
        """The EVALSHA command running ``script`` on this handle's keys with ``argv``."""
        head = self._heads.get(script)
        if head is None:
            # The part of the command that never changes for this handle.
            sha = self._ctx.scripts[script].sha
            head = pack(b"EVALSHA", sha, b"2", self._key, self._index, self._name_bytes)
            head = self._heads[script] = head[head.index(b"\r\n") + 2 :]
        return b"*%d\r\n%s%s" % (6 + len(argv), head, pack_args(argv))

    def _script(self, script: str, *argv: bytes, retry_safe: bool = False) -> Any:
        payload = self._payload(script, argv)
        ref = self._ctx.scripts[script]
        return self._ctx.batcher.run(Op(payload, script=ref, retry_safe=retry_safe))

    def _read(self, *command: bytes) -> Any:
        return self._ctx.batcher.run(Op(pack(*command), script=None, retry_safe=True))

    def _check_kind(self) -> None:
        """Raise SharedTypeError when the name exists with another kind."""
        reply = self._read(b"HGET", self._key, b"k")
        self._kind_of(reply)

    def _kind_of(self, reply: Any) -> bool:
        """For a ``k`` field reply: True when the name exists (with our kind)."""
        if reply is None:
            return False
        if type(reply) is ReplyError:
            self._fail(reply, "read")
        if reply != self.kind.encode():
            raise SharedTypeError(self.name, reply.decode("utf-8", "replace"), self.kind)
        return True

    def _fail(self, reply: ReplyError, op: str, n: Any = None, key: str = "") -> NoReturn:
        """Raise the moonbus error for a script's (or Redis's) error reply."""
        if reply.code != "MOONBUS":
            raise SharedBackendError(
                f"Redis at {self._ctx.url} refused {op} on shared {self.kind} {self.name!r}: "
                f"{reply.message}"
            )
        _, what, detail = [*reply.message.split(" ", 2), "", ""][:3]
        if what == "kind":
            raise SharedTypeError(self.name, detail, self.kind)
        if what == "fieldkind":
            raise SharedTypeError(f"{self.name}[{key!r}]", field_kind(detail.encode()), "int")
        if what == "overflow":
            raise overflow_error(f"{self.name}[{key!r}]" if key else self.name, op, int(detail), n)
        if what == "nonfinite":
            raise float_overflow_error(self.name, float(detail), n)
        if what == "toolong":
            raise SharedValueError(
                f"shared string {self.name!r}: {op} would hold {detail} bytes, over the limit "
                f"of {self._ctx.limits.max_string_bytes}; value unchanged"
            )
        raise SharedBackendError(f"unexpected reply from Redis at {self._ctx.url}: {reply}")

    def _scalar(self, op: str) -> Any:
        """The stored ``v`` of a scalar (None when the name does not exist)."""
        reply = self._read(b"HMGET", self._key, b"k", b"v")
        if type(reply) is ReplyError:
            self._fail(reply, op)
        return reply[1] if self._kind_of(reply[0]) else None

    def _set(self, value: bytes) -> None:
        reply = self._script("set", self.kind.encode(), value)
        if type(reply) is ReplyError:
            self._fail(reply, "set")


class RedisInt(RedisHandle, SharedInt):
    __slots__ = ("_unit",)

    def __init__(self, name: str, ctx: RedisContext, namespace: str) -> None:
        super().__init__(name, ctx, namespace)
        self._unit: bytes | None = None  # the whole command of increment(1), built once

    def get(self) -> int:
        raw = self._scalar("get")
        return 0 if raw is None else int(raw)

    def set(self, value: int) -> None:
        self._set(str(check_int(self.name, "set", value)).encode())

    def increment(self, n: int = 1) -> int:
        if type(n) is not int:
            raise int_operand_error(self.name, "increment", n)
        if n != 1:
            return self._add("increment", n, n)
        # The hot path (``counter:increment()``): a prebuilt command.
        ref = self._ctx.scripts["int_add"]
        if self._unit is None:
            self._unit = self._payload("int_add", split_delta(1))
        reply = self._ctx.batcher.run(Op(self._unit, script=ref, retry_safe=False))
        if type(reply) is ReplyError:
            self._fail(reply, "increment", 1)
        return int(reply)

    def decrement(self, n: int = 1) -> int:
        if type(n) is not int:
            raise int_operand_error(self.name, "decrement", n)
        return self._add("decrement", n, -n)

    def add(self, n: int) -> int:
        if type(n) is not int:
            raise int_operand_error(self.name, "add", n)
        return self._add("add", n, n)

    def subtract(self, n: int) -> int:
        if type(n) is not int:
            raise int_operand_error(self.name, "subtract", n)
        return self._add("subtract", n, -n)

    def _add(self, op: str, n: int, delta: int) -> int:
        reply = self._script("int_add", *split_delta(delta))
        if type(reply) is ReplyError:
            self._fail(reply, op, n)
        return int(reply)


class RedisFloat(RedisHandle, SharedFloat):
    __slots__ = ()

    def get(self) -> float:
        raw = self._scalar("get")
        return 0.0 if raw is None else float(raw)

    def set(self, value: float) -> None:
        self._set(float_text(check_float(self.name, "set", value)))

    def add(self, x: float) -> float:
        number = check_float(self.name, "add", x)
        reply = self._script("float_add", float_text(number))
        if type(reply) is ReplyError:
            self._fail(reply, "add", number)
        return float(reply)


class RedisString(RedisHandle, SharedString):
    __slots__ = ()

    def get(self) -> str:
        raw = self._scalar("get")
        return "" if raw is None else raw.decode("utf-8")

    def set(self, value: str) -> None:
        text = check_string(self.name, "set", value, self._ctx.limits.max_string_bytes)
        self._set(text.encode("utf-8"))

    def append(self, text: str) -> str:
        limit = self._ctx.limits.max_string_bytes
        piece = check_string(self.name, "append", text, limit)
        reply = self._script("string_append", piece.encode("utf-8"), str(limit).encode())
        if type(reply) is ReplyError:
            self._fail(reply, "append")
        return reply.decode("utf-8")  # type: ignore[no-any-return]


class RedisBool(RedisHandle, SharedBool):
    __slots__ = ()

    def get(self) -> bool:
        return bool(self._scalar("get") == b"1")

    def set(self, value: bool) -> None:
        self._set(b"1" if check_bool(self.name, "set", value) else b"0")

    def toggle(self) -> bool:
        reply = self._script("bool_toggle")
        if type(reply) is ReplyError:
            self._fail(reply, "toggle")
        return bool(reply == b"1")


class RedisTable(RedisHandle, SharedTable):
    __slots__ = ()

    def _field(self, key: str | int) -> bytes:
        return b"." + table_key(self.name, key, self._ctx.limits).encode("utf-8")

    def _run(self, op: str, script: str, *argv: bytes, retry_safe: bool = False) -> Any:
        reply = self._script(script, *argv, retry_safe=retry_safe)
        if type(reply) is ReplyError:
            self._fail(reply, op)
        return reply

    def get(self, key: str | int) -> Any:
        reply = self._read(b"HMGET", self._key, b"k", self._field(key))
        if type(reply) is ReplyError:
            self._fail(reply, "get")
        if not self._kind_of(reply[0]) or reply[1] is None:
            return None
        return decode_field(reply[1])

    def set(self, key: str | int, value: Any) -> None:
        field = self._field(key)
        if value is None:
            self._run("set", "table_remove", field)
            return
        stored = normalize_table_value(self.name, field[1:].decode(), value, self._ctx.limits)
        self._run("set", "table_set", field, encode_field(stored))

    def contains(self, key: str | int) -> bool:
        reply = self._run("contains", "table_contains", self._field(key), retry_safe=True)
        return bool(reply == 1)

    def remove(self, key: str | int) -> bool:
        return bool(self._run("remove", "table_remove", self._field(key)) == 1)

    def clear(self) -> None:
        self._run("clear", "table_clear")

    def keys(self) -> list[str]:
        fields = self._run("keys", "table_keys", retry_safe=True)
        return sorted(f[1:].decode("utf-8") for f in fields if f[:1] == b".")

    def to_table(self) -> dict[str, Any]:
        reply = self._read(b"HGETALL", self._key)
        if type(reply) is ReplyError:
            self._fail(reply, "to_table")
        fields = dict(zip(reply[::2], reply[1::2], strict=True))
        if not self._kind_of(fields.get(b"k")):
            return {}
        return decode_table(fields)

    def increment(self, key: str | int, n: int = 1) -> int:
        field = self._field(key)
        name = field[1:].decode("utf-8")
        if type(n) is not int:
            raise int_operand_error(f"{self.name}[{name!r}]", "increment", n)
        reply = self._script("table_incr", field, *split_delta(n))
        if type(reply) is ReplyError:
            self._fail(reply, "increment", n, key=name)
        return int(reply)


def decode_table(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A table's canonical dict from its hash fields (``k`` and ``.key`` ones)."""
    return {
        f[1:].decode("utf-8"): decode_field(raw)
        for f, raw in sorted(fields.items())
        if f[:1] == b"."
    }
