"""Store faults (issue "Containment" 13-18): Redis going away, restarting empty,
answering LOADING/BUSY; a full disk; two writers on one SQLite file; a
read-only file. Every server, process and mount a test starts is stopped in a
``finally`` (see ``support_store_faults``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from moonbus.bus import Event
from moonbus.errors import SharedBackendError, StoreError
from moonbus.lua.boundary import detached
from moonbus.redisio.batch import CommandBatcher, Op, pack
from moonbus.redisio.link import RedisLink
from moonbus.runtime import Runtime
from moonbus.store.redis_backend import RedisEventStore
from moonbus.store.sqlite import SqliteEventStore
from tests.adversarial.support_store_faults import (
    SRC,
    LoadingRedis,
    fill,
    own_redis,
    serve,
    small_tmpfs,
    stop,
)

POLL_EMITTER = """
function poll()
  local ok, err = pcall(events.emit, "out", {n = 1})
  if not ok then stats.set("last_error", tostring(err)) end
  return 50
end
"""


def _wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# -------------------------------------------------------------- 13: segfault
@pytest.mark.redis
def test_serve_exits_cleanly_after_script_emits_failed_on_a_lost_redis(tmp_path: Path) -> None:
    """A script's events.emit failing (Redis away past the retry window) used to
    leave the error holding Lua values of a dead coroutine: the process then
    crashed (SIGSEGV) at its next garbage collection, i.e. on SIGTERM."""
    script = tmp_path / "emitter.lua"
    script.write_text(POLL_EMITTER)
    log = tmp_path / "serve.log"
    with own_redis(tmp_path, persist=False) as server:
        url = f"{server.url}?retry_timeout=0.2"
        with serve([str(script), "--tick-ms", "5000", "--events", url], log) as proc:
            client = server.client()
            assert _wait_for(lambda: client.exists("moonbus:%events:stream")), log.read_text()
            server.kill()
            time.sleep(1.0)  # several emits fail after their retry window
            server.start()
            time.sleep(0.5)
            assert stop(proc) == 0, log.read_text()


# ------------------------------------------------- 17: one writer per SQLite file
_SECOND_WRITER = """
import sys
from moonbus.errors import StoreError
from moonbus.store.sqlite import SqliteEventStore
try:
    SqliteEventStore(sys.argv[1])
except StoreError as exc:
    print(exc)
    sys.exit(3)
sys.exit(0)
"""


def _open_in_other_process(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", _SECOND_WRITER, str(path)],
                          capture_output=True, text=True, timeout=30, env=env)


def test_a_second_writer_is_refused_at_open_and_the_first_keeps_writing(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with Runtime(events=f"sqlite:///{db}") as rt:
        rt.bus.emit("hit", {"n": 1})
        other = _open_in_other_process(db)
        assert other.returncode == 3, other.stderr
        assert "another writer has it open" in other.stdout
        assert f"process {os.getpid()}" in other.stdout
        with pytest.raises(StoreError, match="one process writes a given store at a time"):
            SqliteEventStore(db)  # a second store in this process too
        rt.bus.emit("hit", {"n": 2})  # the first writer never notices
        assert rt.event_store is not None
        assert [e.data["n"] for e in rt.event_store.query()] == [1, 2]
    assert _open_in_other_process(db).returncode == 0  # closed: free again


def test_a_killed_writer_leaves_no_stale_lock(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom moonbus.store.sqlite import "
         "SqliteEventStore\ns = SqliteEventStore(sys.argv[1])\nprint('open', flush=True)\n"
         "time.sleep(60)\n", str(db)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert _open_in_other_process(db).returncode == 3
        holder.kill()  # kill -9: the kernel drops the flock with the process
        holder.wait(timeout=10)
        with SqliteEventStore(db) as store:
            store.append(Event.create("hit", {}, seq=1, tick=None, source="t", ts=0))
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


# ------------------------------------------------------ 18: a read-only store file
def test_a_read_only_store_is_refused_at_open(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    with small_tmpfs(mount, "12m"):  # room for the default journal
        db = mount / "events.db"
        with SqliteEventStore(db) as store:
            store.append(Event.create("hit", {}, seq=1, tick=None, source="t", ts=0))
        (mount / "events.db.lock").unlink()
        remount = subprocess.run(["mount", "-o", "remount,ro", str(mount)],
                                 capture_output=True, text=True, timeout=10)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        with pytest.raises(StoreError, match=r"events\.db: .*(read-only|write access)"):
            SqliteEventStore(db)


def test_a_read_only_file_in_a_writable_directory_is_refused_at_open(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with SqliteEventStore(db) as store:
        store.append(Event.create("hit", {}, seq=1, tick=None, source="t", ts=0))
    for name in ("events.db-wal", "events.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    db.chmod(0o444)
    if os.access(db, os.W_OK):
        pytest.skip("running as root: a chmod 444 file is still writable")
    with pytest.raises(StoreError, match="read-only"):
        SqliteEventStore(db)


# ------------------------------------------------------ 16: disk full, serve goes on
def _emit_until_refused(rt: Runtime, limit: int = 5000) -> StoreError:
    """Emit until the (full) store refuses one; its WAL may have room for a few.
    Journal mode acknowledges from its journal: each emit is flushed (its
    failure is the writer's, kept and retried) so that the next emit meets it."""
    assert rt.event_store is not None
    for n in range(limit):
        try:
            rt.bus.emit("hit", {"n": n})
        except StoreError as exc:
            return exc
        with contextlib.suppress(StoreError):
            rt.event_store.flush()
    raise AssertionError(f"{limit} emits and the full disk never refused one")


# the default (journal) needs room for its 8 MiB journal, made when the store opens
_FULL_DISK_MODES = {"journal": ("", "12m"), "durable": ("?mode=durable", "2m")}


@pytest.mark.parametrize("mode", list(_FULL_DISK_MODES))
@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_disk_full_refuses_the_emit_and_nothing_half_committed_remains(
    tmp_path: Path, native: bool, mode: str
) -> None:
    """Durable: the emit whose commit fails raises. Journal (the default): the
    writer's batch that failed stays in the journal and is retried; each emit
    meanwhile tries it at once and is refused while it fails; nothing
    acknowledged is lost, and the first emit after the outage goes through."""
    small = tmp_path / "small"
    option, size = _FULL_DISK_MODES[mode]
    with small_tmpfs(small, size), Runtime(events=f"sqlite:///{small / 'events.db'}{option}",
                                           native=native) as rt:
        assert isinstance(rt.event_store, SqliteEventStore) and rt.event_store.mode == mode
        seen: list[int] = []
        rt.bus.on("hit", lambda e: seen.append(e.seq))
        rt.bus.emit("hit", {"n": -1})
        filler = fill(small)
        error = _emit_until_refused(rt)
        assert "events.db: the disk is full" in str(error) and error.kind == "disk_full"
        last = rt.bus.statistics().last_seq
        # the refused event: no seq consumed, not in the log, not delivered
        assert seen == [e.seq for e in rt.bus.log()] == list(range(1, last + 1))
        filler.unlink()  # space again: the store recovers by itself
        # durable: the refused emit; journal: the writer's failed batch too
        failures = {"disk_full": 1 if mode == "durable" else 2}
        assert rt.event_store.statistics().append_failures == failures
        assert rt.bus.emit("hit", {"n": 0}).seq == last + 1
        stored = [e.seq for e in rt.event_store.query()]
        assert stored == list(range(1, last + 2)) == seen
        assert rt.event_store.statistics().retries >= (mode == "journal")


@pytest.mark.parametrize("mode", list(_FULL_DISK_MODES))
def test_serve_keeps_running_on_a_full_disk_and_recovers(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "emitter.lua"
    script.write_text(POLL_EMITTER)
    log = tmp_path / "serve.log"
    option, size = _FULL_DISK_MODES[mode]
    with small_tmpfs(tmp_path / "small", size) as small:
        db = small / "events.db"
        store = ["--events-db", str(db)] if not option else ["--events", f"sqlite:///{db}{option}"]
        args = [str(script), "--tick-ms", "20", *store]
        with serve(args, log) as proc:
            filler = fill(small)
            assert _wait_for(lambda: "store error" in log.read_text()), log.read_text()
            time.sleep(0.3)
            assert proc.poll() is None, log.read_text()  # still serving
            filler.unlink()
            assert _wait_for(lambda: "event store recovered" in log.read_text()), log.read_text()
            assert stop(proc) == 0, log.read_text()
        text = log.read_text()
        assert "Traceback" not in text
        assert "tick(s) refused by the event store" in text


# ------------------------------------- 14: LOADING and other transient replies
def test_a_loading_reply_inside_a_batch_is_retried_not_a_raw_error() -> None:
    """redis-py closes the connection when it reads a LOADING reply; the
    replies after it in the same batch used to be read from the closed
    connection (a raw AttributeError). Now: every op is retried and succeeds."""
    fake = LoadingRedis(loading_batches=1)
    pool = redis.ConnectionPool.from_url(fake.url, protocol=2, retry=Retry(NoBackoff(), 0))
    batcher = CommandBatcher(RedisLink(pool, fake.url), retry_timeout=5, what="event store")
    try:
        link_ops = [Op(pack(b"EVALSHA", b"x", b"0", b"%d" % n), script=None, retry_safe=True)
                    for n in range(3)]
        # three ops in one round trip: drive the leader's batch directly
        batcher._flush(link_ops)
        assert [op.reply for op in link_ops] == [7, 7, 7]
        assert [op.error for op in link_ops] == [None, None, None]
        assert fake.loading_sent == 1
        assert batcher.statistics().retries == 3
        # a write after a LOADING reply: its reply is lost with the connection,
        # so it fails as "may or may not have been applied", a moonbus error
        fake.loading_batches = 2
        ops = [Op(pack(b"GET", b"k"), script=None, retry_safe=True),
               Op(pack(b"INCR", b"k"), script=None, retry_safe=False)]
        batcher._flush(ops)
        assert ops[0].reply == 7
        assert isinstance(ops[1].error, SharedBackendError)
    finally:
        batcher.close()
        fake.close()


@pytest.mark.redis
def test_busy_replies_are_retried_within_the_retry_window(tmp_path: Path) -> None:
    """A script running past busy-reply-threshold makes Redis answer BUSY to
    everyone else: appends wait (retried with backoff) and go through after."""
    with own_redis(tmp_path, persist=False) as server:
        store = RedisEventStore(server.url, retry_timeout=10)
        admin = server.client()
        admin.config_set("busy-reply-threshold", 50)

        def block() -> None:
            with pytest.raises(redis.RedisError, match="killed"):
                server.client().eval("while true do end", 0)

        blocker = threading.Thread(target=block)
        try:
            store.append_new("hit", None, ts=0, source="t")
            blocker.start()
            time.sleep(0.2)
            killer = threading.Timer(0.5, lambda: server.client().script_kill())
            killer.start()
            event = store.append_new("hit", None, ts=1, source="t")  # BUSY, then retried
            killer.join(timeout=10)
            assert event.seq == 2
            assert store.statistics().retries > 0
        finally:
            blocker.join(timeout=10)
            store.close()


@pytest.mark.redis
def test_every_event_store_failure_is_a_store_error_naming_the_event_store(
    tmp_path: Path,
) -> None:
    with own_redis(tmp_path, persist=False) as server:
        store = RedisEventStore(server.url, retry_timeout=0.2)
        try:
            store.append_new("hit", None, ts=0, source="t")
            server.kill()
            with pytest.raises(StoreError, match=f"event store {server.url}: appending") as info:
                store.append_new("hit", None, ts=0, source="t")
            assert info.value.kind == "unreachable"
            assert "shared store" not in str(info.value)
            server.start()
            assert store.statistics().append_failures == {"unreachable": 1}
        finally:
            store.close()


# ----------------------------------------------- 15: Redis restarted without its data
@pytest.mark.redis
def test_a_redis_that_lost_its_data_is_reported_and_delivery_goes_on(tmp_path: Path) -> None:
    """Detected by the append (no feed here): that emit raises, the next go on."""
    with own_redis(tmp_path, persist=False) as server, Runtime(
        events=server.url, remote_events=False
    ) as rt:
        seen: list[int] = []
        rt.bus.on("hit", lambda e: seen.append(e.seq))
        for n in range(5):
            rt.bus.emit("hit", {"n": n})
        assert seen == [1, 2, 3, 4, 5]
        server.kill()
        server.start()  # empty: the stream and its seq counter are gone
        with pytest.raises(StoreError, match="lost its data: seq went back from 5 to 0") as info:
            rt.bus.emit("hit", {"n": 5})
        assert info.value.kind == "data_loss"
        # the counter is back above every seq handed out: delivery goes on
        assert rt.bus.emit("hit", {"n": 6}).seq == 6
        assert seen == [1, 2, 3, 4, 5, 6]
        assert rt.event_store is not None
        stats = rt.event_store.statistics()
        assert stats.data_losses == 1 and stats.append_failures == {"data_loss": 1}


@pytest.mark.redis
def test_the_feed_detects_a_redis_that_lost_its_data_and_repairs_the_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Detected by the cross-process feed while this process emits nothing: it
    is logged as an error and counted, the counter is moved back up, and the
    next emit is delivered (before: seqs 1.. again, dropped as already passed)."""
    with own_redis(tmp_path, persist=False) as server, Runtime(events=server.url) as rt:
        seen: list[int] = []
        rt.bus.on("hit", lambda e: seen.append(e.seq))
        for n in range(5):
            rt.bus.emit("hit", {"n": n})
        server.kill()
        server.start()
        store = rt.event_store
        assert store is not None
        assert _wait_for(lambda: store.statistics().data_losses == 1)
        assert "went back from seq 5 to 0" in caplog.text
        assert rt.bus.emit("hit", {"n": 5}).seq == 6
        assert seen == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_a_failed_host_call_from_a_coroutine_keeps_no_lua_value_alive(
    tmp_path: Path, native: bool
) -> None:
    """The mechanism behind the crash: the Lua table a coroutine passed to a
    failing host function must be freed when the call is over, not kept by
    the error's traceback until some later collection (when the coroutine
    that lupa tied it to may be gone)."""
    held: list[object] = []

    def failing_emit(*args: object, **kwargs: object) -> object:
        held.append(sys._getframe(1).f_locals["data"])  # the Lua table, from the coroutine
        raise StoreError("event store test: appending failed (Redis away)")

    script = tmp_path / "emitter.lua"
    script.write_text(POLL_EMITTER)
    with Runtime(threaded=False, native=native) as rt:
        rt.bus.emit = failing_emit  # type: ignore[method-assign,assignment]
        host = rt.load(str(script))
        host.start()
        rt.run_due()
        assert "appending failed" in str(host.stats.get("last_error"))
        assert len(held) == 1
        # only our list (and getrefcount's argument) refer to it: no traceback does
        references = sys.getrefcount(held[0])
        assert references == 2
        held.clear()


def test_a_host_bug_keeps_its_traceback_as_text_without_frames() -> None:
    """Dropping frames at the Lua boundary must not cost the host its
    debugging: a bug (not an error raised for scripts) keeps a text note."""

    def buggy(value: object) -> None:
        raise AttributeError(f"no attribute on {type(value).__name__}")

    def refused(value: object) -> None:
        raise StoreError("event store x: appending failed")

    with pytest.raises(AttributeError) as bug:
        detached(buggy)({"a": 1})
    names = []
    tb = bug.value.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "buggy" not in names  # its frame (and argument) are not kept
    assert "in buggy" in "".join(getattr(bug.value, "__notes__", []))
    with pytest.raises(StoreError) as expected:
        detached(refused)({"a": 1})
    assert not getattr(expected.value, "__notes__", None)
