"""The row <-> Event codec of the event stores (pure).

A committed event is stored as one row ``(seq, tick, type, ts, source,
data_json)``: the SQLite store keeps it as a table row, the Redis store as the
fields of a stream entry (``redis_query.entry_row`` turns one into a row). Both
backends encode, decode and check rows here, so an event reads back the same
from either, and ``row_json_line`` gives the same NDJSON line as
``Event.to_json``.

A row read from a file or a stream is checked before it becomes an event or an
output line (:func:`check_row`): SQLite does not enforce column types, so a
crafted file can hold a text ``tick`` (which would otherwise be spliced into
NDJSON) or data that is not a JSON object; such a row is a ``StoreError``
naming its seq.

Pure functions and immutable values; any thread may call them (``StoredData``
decodes on first read, safely from any thread: see its docstring).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from moonbus.bus.event import Event, freeze, to_jsonable
from moonbus.errors import StoreError

__all__ = [
    "Row",
    "StoredData",
    "check_row",
    "decode_data",
    "encode_data",
    "row_json_line",
    "row_to_event",
]

Row = tuple[int, int | None, str, int, str, str]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _json_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    return to_jsonable(value)


# Stateless once built; reusing them saves building a codec per event.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
_DECODER = json.JSONDecoder(object_hook=MappingProxyType)


def _c_encoder() -> Callable[[Any], str] | None:
    """The C encoder ``json.dumps`` itself uses, built once (None without the C
    accelerator). Same options as ``_ENCODER``, so the same bytes; it skips the
    per-call setup of ``JSONEncoder.encode``, which is half the cost of a small
    event. ``markers=None`` drops cycle tracking: frozen event data cannot be
    cyclic, and a value object that recurses forever fails with RecursionError."""
    make = getattr(json.encoder, "c_make_encoder", None)
    quote = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or quote is None:
        return None
    encode = make(None, _json_default, quote, None, ":", ",", False, False, True)

    def run(data: Any) -> str:
        return "".join(encode(data, 0))

    return run


_FAST_ENCODE = _c_encoder()


def encode_data(data: Mapping[str, Any]) -> str:
    """Event data as compact JSON, byte-identical to ``Event.to_dict()['data']`` encoded
    with ``Event.to_json``'s options. The C encoder does the work; read-only
    mappings and value objects go through ``default``."""
    if type(data) is StoredData:
        return data.text
    if _FAST_ENCODE is not None:
        return _FAST_ENCODE(data)
    return _ENCODER.encode(data)


def decode_data(text: str) -> Mapping[str, Any]:
    """Stored JSON back to frozen event data (mappings read-only, arrays as tuples).

    Raises ``ValueError`` with a clear reason when the text is not a JSON
    object, has trailing bytes, or is nested too deeply to decode (JSON's own
    recursion limit, or the 64 levels event data may have).
    """
    if text == "{}":
        return _EMPTY
    try:
        if "[" in text:
            frozen: Any = freeze(json.loads(text))
        else:
            # No arrays anywhere: freezing is just wrapping each object, done while
            # parsing. raw_decode: our own compact JSON has no whitespace to skip.
            frozen, end = _DECODER.raw_decode(text)
            if end != len(text):
                raise ValueError(f"extra data after the JSON value at offset {end}")
    except RecursionError:
        raise ValueError("the data is nested too deeply to decode") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the data is not valid JSON ({exc})") from None
    if not isinstance(frozen, Mapping):
        raise ValueError(f"the data is a JSON {type(frozen).__name__}, not an object")
    return frozen


class StoredData(Mapping[str, Any]):
    """Read-only event data that is decoded from its stored JSON on first use.

    Queries often need only seq, tick and type (counting, paging, re-exporting),
    so paying for JSON decoding of every row up front is wasted work. Any read
    (``[]``, ``len``, iteration, ``==``) decodes once into frozen data (nested
    mappings read-only, arrays as tuples). Safe to share between threads: two
    threads racing on the first read decode equal values and either one is kept.
    """

    __slots__ = ("_data", "seq", "text")

    def __init__(
        self, text: str, seq: int | None = None, decoded: Mapping[str, Any] | None = None
    ) -> None:
        self.text = text
        self.seq = seq
        self._data = decoded  # given when the caller already decoded ``text``

    def _decoded(self) -> Mapping[str, Any]:
        data = self._data
        if data is None:
            try:
                data = self._data = decode_data(self.text)
            except ValueError as exc:
                raise StoreError(f"stored event seq {self.seq}: {exc}") from None
        return data

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __contains__(self, key: object) -> bool:
        return key in self._decoded()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StoredData):
            return self.text == other.text or self._decoded() == other._decoded()
        if isinstance(other, Mapping):
            return dict(self._decoded()) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StoredData({dict(self._decoded())!r})"


def check_row(row: tuple[Any, ...]) -> str | None:
    """What is wrong with the column types of a row read from a file (None when
    nothing). Cheap: a few type checks; the data's JSON is checked when decoded."""
    seq, tick, event_type, ts, source, data = row
    if type(seq) is not int:
        return f"seq {seq!r} is not an integer"
    for name, value, ok in (
        ("tick", tick, tick is None or type(tick) is int),
        ("type", event_type, type(event_type) is str),
        ("ts", ts, type(ts) is int),
        ("source", source, type(source) is str),
        ("data", data, type(data) is str),
    ):
        if not ok:
            return f"its {name} is a {type(value).__name__}, not what the store writes"
    return None


def _checked(row: Row) -> Row:
    problem = check_row(row)
    if problem is not None:
        raise StoreError(f"stored event seq {row[0]}: {problem}")
    return row


def row_to_event(row: Row, decoded: Mapping[str, Any] | None = None) -> Event:
    """Rebuild the committed event from its row (data decoded on first use, or
    ``decoded`` when the caller already did)."""
    seq, tick, event_type, ts, source, data = _checked(row)
    return Event(event_type, StoredData(data, seq, decoded), seq, tick, ts, source)


def row_json_line(row: Row) -> str:
    """The row as one NDJSON line (no newline), identical to ``Event.to_json()``,
    built without decoding the stored data (its columns are type-checked, so
    nothing but the data text is spliced in)."""
    seq, tick, event_type, ts, source, data = _checked(row)
    tick_text = "null" if tick is None else str(tick)
    return (
        f'{{"seq":{seq},"tick":{tick_text},"type":{json.dumps(event_type, ensure_ascii=False)},'
        f'"data":{data},"ts":{ts},"source":{json.dumps(source, ensure_ascii=False)}}}'
    )
