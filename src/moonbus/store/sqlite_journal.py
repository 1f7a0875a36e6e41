"""The memory-mapped journal of the SQLite event store's ``journal`` mode.

Why: a durable append that commits its own SQLite transaction costs the
emitting thread SQLite's whole commit path (about 16 system calls: WAL
frame writes and shared-memory locks) and, once per WAL cycle, the fsync
of a restarted WAL's header. In a game loop the first ``emit`` of a frame
runs with cold CPU caches after the loop slept, and that path is what sets
the p99 (measured: ~140 us of SQLite commit out of ~200 us for that emit),
while the fsync (0.1-10 ms on a shared disk) sets the max. The promise is
only that an event whose ``emit`` returned survives the *process* dying
(kill -9, a crash): anything the kernel holds does. A store of a shared,
file-backed memory mapping is held by the kernel the moment it is made, with
no system call: the page belongs to the file's page cache, which the kernel
writes back even when the process is gone. So in ``journal`` mode an append
copies its row into this journal (a ring of records in ``<db>-mbjournal``)
and hands it to the store's batch writer, which commits rows to SQLite in
batches off the emitting thread, and then tells the journal they are in
the database (``committed_through``). When the store is opened again, the
records after the database's last seq are committed first (``recover``).

File layout (little-endian): a 4 KiB header (magic ``MBJRNL02``, capacity,
``head``: the offset of the oldest record that may not be in the database
yet, and the id of the database the journal belongs to, from its ``meta``
table: ``sqlite_journal_open`` replays a journal into that database only;
``MBJRNL01`` journals, from before ids, have none), then
records from ``HEADER`` to the capacity: ``u32 length, u32 crc32 of the
body, body`` with body ``i64 seq, i64 tick, i64 ts, u8 has_tick, u32 type
length, u32 source length`` and the UTF-8 of type, source and data. A
length of ``WRAP`` means "the next record is at ``HEADER``"; the writer
always leaves room for that marker. The file is allocated in full when it
is created (``posix_fallocate``) and its pages are touched at open, so a
store never faults on a hole (which, on a full disk, would be SIGBUS). It
takes the database file's permissions (as SQLite's -wal does): it holds the
same events, so it is never readable by more users than the database.

Recovery reads from ``head`` while each record is whole (its crc matches)
and its seq is above the one before; the first record that is not (a record
torn by a power loss, or an older lap's record past the last one written)
ends the journal. Records at or below the database's last seq are skipped.
Where it ends, the ring is searched (``find`` of the next two seqs' bytes)
for a whole record that should have come next: finding one means the record
where recovery stopped is corrupt in the middle of the journal, not its end;
what follows cannot be replayed (seq would have a gap), so it is logged at
WARNING with the offsets and the bytes not replayed (``corrupt_bytes``), and
``reset`` wipes the ring: those records have seqs the next session numbers
anew, and a recovery could otherwise follow a new record into them.
What a power loss may do is what ``synchronous=NORMAL`` says: the last
records may be gone; the journal is never fsynced.

Limits: ``capacity`` bytes (``journal_bytes``, default 8 MiB, ~25,000
events of 300 bytes). An append that finds the journal full waits until the
batch writer committed what it holds (``waits`` counts those); a record
larger than half the journal raises ``RecordTooLarge`` (an empty journal
always has room for one that is not, wherever its tail is), and the store
commits that row in the ``emit`` instead, after the writer's.

Threads: ``append`` is called by the store's appending thread (under its
append lock), ``committed_through`` by the batch writer's thread; ``head``
is one 8-byte store read by the other under the GIL. ``recover``, ``reset``
and ``close`` run when no other thread uses the journal (open and close).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import mmap
import os
import stat
import struct
import zlib
from collections.abc import Iterator

from moonbus.errors import ConfigError, StoreError
from moonbus.store.event_codec import Row

__all__ = ["DEFAULT_JOURNAL_BYTES", "HEADER", "Journal", "RecordTooLarge", "journal_path"]

_log = logging.getLogger(__name__)

MAGIC = b"MBJRNL02"
LEGACY_MAGIC = b"MBJRNL01"  # before journals carried their database's id
HEADER = 4096
WRAP = 0xFFFFFFFF
DEFAULT_JOURNAL_BYTES = 8 * 1024 * 1024
MIN_JOURNAL_BYTES = 64 * 1024

_FILE_HEAD = struct.Struct("<8sqqq")  # magic, capacity, head, database id
_REC = struct.Struct("<II")  # body length, crc32(body)
_LEN = struct.Struct("<I")  # one of them (a wrap marker is the length alone)
_BODY = struct.Struct("<qqqBII")  # seq, tick, ts, has_tick, type length, source length
_HEAD_AT = 16  # offset of ``head`` in the file header


class RecordTooLarge(StoreError):
    """A row whose record would take more than half the journal: the store
    commits it in its ``emit`` instead (as in durable mode)."""


def journal_path(db_path: str) -> str:
    """The journal file of the store at ``db_path``."""
    return db_path + "-mbjournal"


class Journal:
    """A ring of row records in a shared file mapping. See the module docstring."""

    def __init__(
        self, path: str, capacity: int = DEFAULT_JOURNAL_BYTES, db_id: int = 0,
        file_mode: int = 0o644,
    ) -> None:
        if not isinstance(capacity, int) or capacity < MIN_JOURNAL_BYTES:
            raise ConfigError(
                f"journal_bytes must be a whole number >= {MIN_JOURNAL_BYTES}, not {capacity!r}"
            )
        self.path = path
        self.waits = 0  # appends that found the journal full (appending thread)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, file_mode)
        except OSError as exc:
            raise StoreError(f"event store journal {path}: cannot open it ({exc})") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StoreError(f"event store journal {path}: not a regular file")
            if info.st_mode & 0o777 & ~file_mode:  # never readable by more than its db
                with contextlib.suppress(OSError):
                    os.fchmod(fd, info.st_mode & 0o777 & file_mode)
            existing = self._read_header(fd) if info.st_size >= HEADER else None
            if existing is not None:
                # the file's own size wins: its records are laid out so
                capacity, self.file_db_id = existing
            elif info.st_size and any(os.pread(fd, HEADER, 0)):
                raise StoreError(f"event store journal {path}: {_why_not(fd, info.st_size)}")
            try:
                _allocate(fd, capacity)
            except OSError as exc:
                if info.st_size == 0:  # made here (or empty): nothing to keep
                    os.unlink(path)
                raise StoreError(
                    f"event store journal {path}: cannot allocate {capacity} bytes ({exc})",
                    kind="disk_full" if exc.errno == errno.ENOSPC else "io",
                ) from exc
            self._map = mmap.mmap(fd, capacity)
        finally:
            os.close(fd)
        self.capacity = capacity
        self.db_id = db_id  # written into the header by ``reset``
        if existing is None:
            self.file_db_id = db_id
            self._map[0:_FILE_HEAD.size] = _FILE_HEAD.pack(MAGIC, capacity, HEADER, db_id)
        for page in range(0, capacity, mmap.PAGESIZE):  # fault every page in now
            self._map[page] = self._map[page]
        self._head = self._read_head()
        self._tail = self._head  # set by ``reset`` after recovery
        # (seq, end offset) of every record appended and not yet committed:
        # appended by the appending thread, popped by the batch writer's
        self._ends: collections.deque[tuple[int, int]] = collections.deque()
        self._undo = (HEADER, HEADER)  # (tail before, offset) of the last append
        self.corrupt_bytes = 0  # bytes of records recovery found past a corrupt one
        self._wipe = False  # ``reset`` zeroes the ring (records past a corrupt one)

    @staticmethod
    def _read_header(fd: int) -> tuple[int, int | None] | None:
        """(capacity, database id; None in a legacy journal) of a journal file,
        None if the file does not start with a journal header."""
        magic, capacity, _, db_id = _FILE_HEAD.unpack(os.pread(fd, _FILE_HEAD.size, 0))
        if magic not in (MAGIC, LEGACY_MAGIC):
            return None
        if capacity < MIN_JOURNAL_BYTES or capacity > os.fstat(fd).st_size:
            return None
        return int(capacity), (int(db_id) if magic == MAGIC else None)

    def _read_head(self) -> int:
        (head,) = struct.unpack_from("<q", self._map, _HEAD_AT)
        return head if HEADER <= head < self.capacity else HEADER

    # ------------------------------------------------------------- appending

    def append(self, row: Row) -> bool:
        """Write ``row``'s record; False when the journal is full (nothing written)."""
        seq, tick, type_, ts, source, data = row
        t, s, d = type_.encode(), source.encode(), data.encode()
        body = _BODY.pack(seq, 0 if tick is None else tick, ts, tick is not None, len(t), len(s))
        body += t + s + d
        size = _REC.size + len(body)
        if 2 * size + 8 > self.capacity - HEADER:  # so an empty journal always has room
            raise RecordTooLarge(
                f"event store journal {self.path}: event seq {seq} needs {size} bytes, more "
                f"than half the journal ({self.capacity} bytes, setting journal_bytes)"
            )
        tail = self._tail
        at = self._place(size)
        if at < 0:
            return False
        m = self._map
        m[at + _REC.size : at + size] = body
        _REC.pack_into(m, at, len(body), zlib.crc32(body))
        self._tail = end = at + size
        self._ends.append((seq, end))
        self._undo = (tail, at)
        return True

    def undo(self) -> None:
        """Take back the last ``append`` (its row could not be handed on, so its
        ``emit`` raises): recovery stops where it was, the next record goes there."""
        tail, at = self._undo
        self._ends.pop()
        struct.pack_into("<I", self._map, at, 0)
        self._tail = tail

    def _place(self, size: int) -> int:
        """Where a record of ``size`` bytes goes (wrapping if needed), or -1: full.
        The tail never reaches the head (equal means empty) and always leaves 4
        bytes before the end for a wrap marker."""
        head, tail = self._head, self._tail
        if tail >= head:
            if tail + size + 4 <= self.capacity:
                return tail
            if HEADER + size < head:  # wrap
                struct.pack_into("<I", self._map, tail, WRAP)
                return HEADER
            return -1
        return tail if tail + size < head else -1

    def committed_through(self, seq: int) -> None:
        """The rows up to ``seq`` are committed to the database: their records may
        be overwritten. (The batch writer's thread.)"""
        ends = self._ends
        end = -1
        while ends and ends[0][0] <= seq:
            end = ends.popleft()[1]
        if end >= 0:
            self._head = end
            struct.pack_into("<q", self._map, _HEAD_AT, end)

    # ------------------------------------------------------------- recovery

    def recover(self, after_seq: int) -> list[Row]:
        """The rows of the records from ``head`` on whose seq is above ``after_seq``.
        Where they end, the rest of the ring is searched for a whole record that
        should have come later (a corrupt record in the middle): logged at WARNING
        with the offsets and bytes not replayed, counted in ``corrupt_bytes``."""
        rows: list[Row] = []
        last = -1
        stop = self._head
        self._recovered: list[tuple[int, int]] = []  # (seq, end) of each, for ``resume``
        for row, _, end in self._records(self._head, -1):
            last = row[0]
            if last > after_seq:
                rows.append(row)
            stop = end
            self._recovered.append((last, end))
        self._report_lost(stop, max(last, after_seq))
        return rows

    def resume(self) -> None:
        """Keep what ``recover`` found instead of ``reset``: its rows could not be
        committed at open and go to the batch writer; the next record is written
        after them and ``committed_through`` frees them as it frees any."""
        self._ends.extend(self._recovered)
        if self._recovered:
            self._tail = self._recovered[-1][1]
        if self._wipe:  # as ``reset`` does, around the records kept
            head, tail, m = self._head, self._tail, self._map
            spans = [(tail, head)] if tail < head else [(tail, self.capacity), (HEADER, head)]
            for lo, hi in spans:
                m[lo:hi] = bytes(hi - lo)
            self._wipe = False

    def _records(self, pos: int, last: int) -> Iterator[tuple[Row, int, int]]:
        """(row, offset, end) of each whole record from ``pos`` (following one wrap)
        while seqs increase after ``last``."""
        m = self._map
        wrapped = False
        while pos + 4 <= self.capacity:  # a wrap marker may sit in the last 4 bytes
            (length,) = _LEN.unpack_from(m, pos)
            if length == WRAP:
                if wrapped:
                    return
                wrapped, pos = True, HEADER
                continue
            if pos + _REC.size > self.capacity:
                return
            (crc,) = _LEN.unpack_from(m, pos + 4)
            row = self._record_at(pos, length, crc)
            if row is None or row[0] <= last:
                return
            last = row[0]
            end = pos + _REC.size + length
            yield row, pos, end
            pos = end

    def _record_at(self, pos: int, length: int, crc: int) -> Row | None:
        """The row of a whole record at ``pos``, None if it is not one."""
        end = pos + _REC.size + length
        if length < _BODY.size or end > self.capacity:
            return None
        body = self._map[pos + _REC.size : end]
        return _decode(body) if zlib.crc32(body) == crc else None

    def _report_lost(self, stop: int, base: int) -> None:
        """Recovery stopped at ``stop`` having seen seqs through ``base``: look for
        a whole record of seq ``base + 1`` or ``base + 2`` anywhere else in the
        ring (one found means the record at ``stop`` is corrupt, not the end)."""
        m = self._map
        for seq in (base + 1, base + 2):
            needle = struct.pack("<q", seq)
            for lo, hi in ((stop + 1, self.capacity), (HEADER, stop)):
                hit = m.find(needle, lo, hi)
                while hit >= 0:
                    at = hit - _REC.size
                    if at >= HEADER:
                        found = self._record_at(at, *_REC.unpack_from(m, at))
                        if found is not None and found[0] == seq:
                            self._warn_lost(stop, at, base)
                            return
                    hit = m.find(needle, hit + 1, hi)

    def _warn_lost(self, stop: int, at: int, base: int) -> None:
        seqs, size = [], 0
        for row, start, end in self._records(at, base):
            seqs.append(row[0])
            size += end - start
        gap = at - stop if at > stop else (self.capacity - stop) + (at - HEADER)
        self.corrupt_bytes = gap + size
        self._wipe = True
        _log.warning(
            "event store journal %s: the record at offset %d is corrupt; %d byte(s) "
            "from there on were not replayed into the database, among them %d whole "
            "event(s) after it (seq %d-%d, from offset %d)",
            self.path, stop, gap + size, len(seqs), seqs[0], seqs[-1], at,
        )

    def reset(self) -> None:
        """Empty the journal (every record is in the database) and write its
        header afresh, carrying ``db_id`` (a legacy journal becomes a current one)."""
        self._ends.clear()
        self._head = self._tail = HEADER
        if self._wipe:
            # records past a corrupt one were not replayed and have seqs the next
            # session reuses: left in the ring, a recovery could chain into them
            self._map[HEADER:] = bytes(self.capacity - HEADER)
            self._wipe = False
        _FILE_HEAD.pack_into(self._map, 0, MAGIC, self.capacity, HEADER, self.db_id)
        self.file_db_id = self.db_id
        _REC.pack_into(self._map, HEADER, 0, 0)  # no record here: recovery stops at once

    def close(self) -> None:
        self._map.close()


def _why_not(fd: int, size: int) -> str:
    """Why a non-empty file is not taken as a journal, for the open's error: a
    journal cut short (copied in part, a file system that lost its end) says
    so, and that its records are not replayed until it is moved away."""
    magic, capacity, _, _ = _FILE_HEAD.unpack(os.pread(fd, _FILE_HEAD.size, 0).ljust(32, b"\0"))
    if magic in (MAGIC, LEGACY_MAGIC) and capacity > size:
        return (f"its header says {capacity} bytes but the file has {size} (cut short?); its "
                "records cannot be replayed safely: move it away to open the store")
    return "not a moonbus journal file"


def _allocate(fd: int, size: int) -> None:
    """Give the file ``size`` bytes of real blocks (not a hole), so that writing
    through the mapping can never fault for want of disk space."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        allocate(fd, 0, size)
        return
    have = os.fstat(fd).st_size  # no posix_fallocate (macOS): write the zeros
    zeros = bytes(1 << 16)
    while have < size:
        have += os.pwrite(fd, zeros[: size - have], have)


def _decode(body: bytes) -> Row | None:
    """A record's body back to a row; None when its lengths do not fit."""
    seq, tick, ts, has_tick, lt, ls = _BODY.unpack_from(body)
    at = _BODY.size
    if at + lt + ls > len(body):
        return None
    try:
        type_ = body[at : at + lt].decode()
        source = body[at + lt : at + lt + ls].decode()
        data = body[at + lt + ls :].decode()
    except UnicodeDecodeError:
        return None
    return (seq, tick if has_tick else None, type_, ts, source, data)
