"""BatchWriter: order, batch sizes, flush, the bounded buffer and failures."""

from __future__ import annotations

import threading

import pytest

from moonbus.errors import ClosedError, ConfigError, StoreError
from moonbus.store.batching import BatchWriter


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_with: BaseException | None = None

    def write(self, batch: list[int]) -> None:
        self.entered.set()
        self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(batch))


def writer(recorder: Recorder, **options: object) -> BatchWriter[int]:
    settings: dict[str, object] = {
        "batch_size": 10,
        "flush_interval": 5.0,
        "max_pending": 20,
        "name": "test writer",
    }
    settings.update(options)
    return BatchWriter(recorder.write, **settings)  # type: ignore[arg-type]


def test_items_are_written_in_order_in_bounded_batches() -> None:
    recorder = Recorder()
    w = writer(recorder)
    for item in range(95):
        w.put(item)
    w.flush()
    assert [x for batch in recorder.batches for x in batch] == list(range(95))
    assert all(1 <= len(batch) <= 10 for batch in recorder.batches)
    assert w.pending == 0
    w.close()


def test_flush_does_not_wait_for_the_interval() -> None:
    recorder = Recorder()
    w = writer(recorder, flush_interval=60.0)
    w.put(1)
    w.flush()  # would take a minute if flush waited for the interval
    assert recorder.batches == [[1]]
    w.close()


def test_interval_writes_a_partial_batch_without_flush() -> None:
    recorder = Recorder()
    w = writer(recorder, flush_interval=0.01)
    w.put(7)
    assert recorder.entered.wait(10)
    w.close()
    assert recorder.batches == [[7]]


def test_put_blocks_while_the_buffer_is_full() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    w = writer(recorder, batch_size=2, max_pending=2, flush_interval=0.001)
    w.put(0)
    assert recorder.entered.wait(10)  # writer holds [0] and is stuck in write()
    w.put(1)
    w.put(2)  # buffer now full (2 items)
    done = threading.Event()

    def put_more() -> None:
        w.put(3)
        done.set()

    thread = threading.Thread(target=put_more)
    thread.start()
    assert not done.wait(0.2)
    assert w.pending == 3
    recorder.gate.set()
    assert done.wait(10)
    thread.join()
    w.close()
    assert [x for batch in recorder.batches for x in batch] == [0, 1, 2, 3]


def test_write_failure_is_reported_with_the_loss() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    recorder.fail_with = OSError("disk full")
    w = writer(recorder, flush_interval=0.001)
    w.put(1)
    assert recorder.entered.wait(10)
    w.put(2)
    recorder.gate.set()
    with pytest.raises(StoreError, match=r"disk full.*2 appended event\(s\) were not written"):
        w.flush()
    with pytest.raises(StoreError, match="background writer failed"):
        w.put(3)
    assert w.pending == 0
    with pytest.raises(StoreError, match="disk full"):
        w.close()


def test_close_writes_the_rest_and_refuses_more() -> None:
    recorder = Recorder()
    w = writer(recorder)
    for item in range(5):
        w.put(item)
    w.close()
    w.close()
    assert recorder.batches == [[0, 1, 2, 3, 4]]
    with pytest.raises(ClosedError):
        w.put(9)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"max_pending": 5}, "max_pending"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        writer(Recorder(), **options)


def test_a_retrying_writer_refuses_puts_while_failing_and_loses_nothing() -> None:
    """``retry_after``: the failed batch is kept and tried again; puts and
    flushes ask for an attempt at once and raise (with the cause's kind) while
    it fails; the first one after the outage goes through."""
    recorder = Recorder()
    attempts: list[int] = []

    def retry_after(exc: BaseException, attempt: int) -> float | None:
        attempts.append(attempt)
        return 60.0  # only an asking put or flush makes the next attempt

    w = writer(recorder, retry_after=retry_after)
    w.put(1)
    w.put(2)
    recorder.fail_with = StoreError("disk full (simulated)", kind="disk_full")
    with pytest.raises(StoreError, match=r"cannot write.*2 appended event.*retried") as raised:
        w.flush()
    assert raised.value.kind == "disk_full"
    with pytest.raises(StoreError, match="disk full") as refused:
        w.put(3)  # refused: nothing queued
    assert refused.value.kind == "disk_full"
    assert w.pending == 2
    recorder.fail_with = None
    w.put(3)  # the attempt it asked for worked
    w.flush()
    w.close()
    assert [n for batch in recorder.batches for n in batch] == [1, 2, 3]
    assert attempts == [1, 2, 3]  # flush's wait, flush's attempt, the refused put's


def test_a_retrying_writer_gives_up_at_close_naming_what_became_of_the_items() -> None:
    recorder = Recorder()
    w = writer(recorder, retry_after=lambda exc, attempt: 60.0, lost_note="stay safe")
    recorder.fail_with = StoreError("locked (simulated)", kind="locked")
    w.put(1)
    with pytest.raises(StoreError):
        w.flush()
    with pytest.raises(StoreError, match=r"1 appended event.*stay safe") as raised:
        w.close()  # one last attempt, then no more
    assert raised.value.kind == "locked"
    with pytest.raises(ClosedError):
        w.put(2)
