"""The recording file: one SQLite database, written by ``Recorder``, read by ``Recording``.

Tables (every JSON column holds ``moonbus.record.codec`` data):

* ``meta(key, value)``: ``format`` (1), ``seed``, ``tick_seconds``,
  ``virtual``, ``ticks`` (the last tick of the run), ``app`` (its
  ``--app`` spec and name), ``event_types``, ``event_delivery``,
  ``settings`` (HostSettings), ``apis`` (each Lua global: an object
  reference or plain data, per script name; ``""``: as registered),
  ``started_at`` (wall clock, information only).
* ``scripts(pos, name, entry, options, files)``: load order, unique name,
  the entry path relative to the stored files (``mining.lua`` or
  ``banker/``), the user's options, and ``{relative path: text}`` of every
  file the script can read (a folder script's modules and manifest too).
* ``objects(id, class, script, json)`` and ``classes(name, methods, multi)``:
  the host objects scripts saw (each script has its own stand-ins of the API
  globals and of what their calls return; ``script`` is NULL for objects in
  event payloads, which all scripts share), their class's Lua methods, their
  JSON form.
* ``events(seq, tick, type, source, data, call)``: every committed event;
  ``call`` is the API call during which the host emitted it (a replay emits
  it when that call is answered) or NULL (fed at its tick).
* ``calls(id, obj, method, args, result, error, seq, tick)``: every host API
  call in the order they began, with the last seq and tick when it began.
* ``final(script, status, shared, stats)``: each script at the end.

The file is written under a temporary name and renamed when the recording
is finished, so a reader never sees half a recording.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moonbus.errors import ConfigError

__all__ = ["FORMAT", "CallRow", "EventRow", "Recording", "RecordingWriter", "ScriptRow"]

FORMAT = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE scripts (pos INTEGER PRIMARY KEY, name TEXT NOT NULL, entry TEXT NOT NULL,
                      options TEXT NOT NULL, files TEXT NOT NULL);
CREATE TABLE classes (name TEXT PRIMARY KEY, methods TEXT NOT NULL, multi TEXT NOT NULL);
CREATE TABLE objects (id INTEGER PRIMARY KEY, class TEXT NOT NULL, script TEXT, json TEXT);
CREATE TABLE events (seq INTEGER PRIMARY KEY, tick INTEGER, type TEXT NOT NULL,
                     source TEXT NOT NULL, data TEXT NOT NULL, call INTEGER);
CREATE TABLE calls (id INTEGER PRIMARY KEY, obj INTEGER NOT NULL, method TEXT NOT NULL,
                    args TEXT NOT NULL, result TEXT, error TEXT, seq INTEGER NOT NULL,
                    tick INTEGER);
CREATE TABLE final (script TEXT PRIMARY KEY, status TEXT NOT NULL, shared TEXT NOT NULL,
                    stats TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ScriptRow:
    name: str
    entry: str
    options: dict[str, Any]
    files: dict[str, str]


@dataclass(frozen=True)
class EventRow:
    seq: int
    tick: int | None
    type: str
    source: str
    data: Any
    call: int | None

    @property
    def from_script(self) -> bool:
        return self.source.startswith("script:")


@dataclass(frozen=True)
class CallRow:
    id: int
    obj: int
    method: str
    args: Any
    result: Any
    error: Any
    seq: int
    tick: int | None


class RecordingWriter:
    """Appends rows to a new recording file. Callers serialise access (one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        try:
            self._temp.unlink(missing_ok=True)
            self._db = sqlite3.connect(self._temp, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot write the recording {self.path}: {exc}") from exc
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")

    def meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def script(self, pos: int, row: ScriptRow) -> None:
        self._db.execute("INSERT INTO scripts VALUES (?, ?, ?, ?, ?)",
                         (pos, row.name, row.entry, json.dumps(row.options),
                          json.dumps(row.files)))

    def klass(self, name: str, methods: list[str], multi: list[str]) -> None:
        self._db.execute("INSERT OR REPLACE INTO classes VALUES (?, ?, ?)",
                         (name, json.dumps(methods), json.dumps(multi)))

    def objects(self, rows: list[tuple[int, str, str | None, str | None]]) -> None:
        self._db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?)", rows)

    def events(self, rows: list[tuple[int, int | None, str, str, str, int | None]]) -> None:
        self._db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)

    def calls(self, rows: list[tuple[Any, ...]]) -> None:
        self._db.executemany("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def origins(self, origins: Mapping[int, int]) -> None:
        """Tie host events (by seq) to the API call during which they were emitted."""
        self._db.executemany("UPDATE events SET call = ? WHERE seq = ?",
                             [(call, seq) for seq, call in origins.items()])

    def final(self, script: str, status: str, shared: str, stats: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO final VALUES (?, ?, ?, ?)",
                         (script, status, shared, stats))

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        """Commit, close and put the file in place (replacing an older one)."""
        self._db.commit()
        self._db.close()
        os.replace(self._temp, self.path)

    def abandon(self) -> None:
        self._db.close()
        self._temp.unlink(missing_ok=True)


class Recording:
    """A recording file, read (``with Recording(path) as rec``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"no recording at {self.path}")
        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path} is not a moonbus recording: {exc}") from exc
        self.meta: dict[str, Any] = {k: json.loads(v) for k, v in rows}
        if self.meta.get("format") != FORMAT:
            raise ConfigError(f"{self.path}: recording format {self.meta.get('format')!r} "
                              f"is not {FORMAT} (recorded by another moonbus version?)")

    def scripts(self) -> list[ScriptRow]:
        return [ScriptRow(name, entry, json.loads(opts), json.loads(files))
                for name, entry, opts, files in self._db.execute(
                    "SELECT name, entry, options, files FROM scripts ORDER BY pos")]

    def classes(self) -> dict[str, tuple[list[str], list[str]]]:
        return {name: (json.loads(m), json.loads(mu)) for name, m, mu in
                self._db.execute("SELECT name, methods, multi FROM classes")}

    def objects(self) -> dict[int, tuple[str, str | None, Any]]:
        """id -> (class name, script whose stand-in it was or None, JSON form or None)."""
        return {i: (cls, script, None if js is None else json.loads(js)) for i, cls, script, js
                in self._db.execute("SELECT id, class, script, json FROM objects")}

    def events(self) -> Iterator[EventRow]:
        for seq, tick, typ, source, data, call in self._db.execute(
                "SELECT seq, tick, type, source, data, call FROM events ORDER BY seq"):
            yield EventRow(seq, tick, typ, source, json.loads(data), call)

    def calls(self) -> Iterator[CallRow]:
        for row in self._db.execute("SELECT id, obj, method, args, result, error, seq, tick "
                                    "FROM calls ORDER BY id"):
            cid, obj, method, args, result, error, seq, tick = row
            yield CallRow(cid, obj, method, json.loads(args),
                          None if result is None else json.loads(result),
                          None if error is None else json.loads(error), seq, tick)

    def final(self) -> dict[str, Mapping[str, Any]]:
        return {script: {"status": status, "shared": json.loads(shared),
                         "stats": json.loads(stats)}
                for script, status, shared, stats in self._db.execute(
                    "SELECT script, status, shared, stats FROM final")}

    def counts(self) -> dict[str, int]:
        """Rows per table (``moonbus replay`` prints them)."""
        out = {}
        for table in ("events", "calls", "scripts"):
            out[table] = int(self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        return out

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
