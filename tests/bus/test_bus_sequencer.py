"""The reorder point: events numbered by a shared store are committed in seq order."""

from __future__ import annotations

import logging
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moonbus.bus.event import Event
from moonbus.bus.sequencer import Sequencer
from moonbus.errors import BusError


class Harness:
    """A sequencer and the seqs it committed so far (in take() order)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.seq = Sequencer(timeout=timeout, logger=logging.getLogger("test.sequencer"))
        self.taken: list[int] = []

    @property
    def committed(self) -> list[int]:
        self.taken += [event.seq for event in self.seq.take()]
        return self.taken

    def __enter__(self) -> Sequencer:
        return self.seq

    def __exit__(self, *exc: object) -> None:
        pass


def ev(seq: int, event_type: str = "t") -> Event:
    return Event.create(event_type, None, seq=seq, ts=0)


def test_local_only_commits_in_seq_order_whatever_the_reply_order() -> None:
    h = Harness()
    with h as s:
        a, b, c = s.begin(), s.begin(), s.begin()
        s.arrived(c, ev(9))
        s.arrived(a, ev(4))
        assert h.committed == []  # b may have been sent first and hold a smaller seq
        s.arrived(b, ev(7))
        assert h.committed == [4, 7, 9]


def test_local_only_appends_registered_later_do_not_hold_an_event_back() -> None:
    h = Harness()
    with h as s:
        a, b = s.begin(), s.begin()
        s.arrived(a, ev(3))
        later = s.begin()  # registered after 3 arrived: its seq will be larger than 3
        s.arrived(b, ev(5))
        assert h.committed == [3]  # but it may be smaller than 5
        assert s.pending(5)
        s.arrived(later, ev(4))
        assert h.committed == [3, 4, 5]


def test_local_only_a_failed_append_unblocks_the_others() -> None:
    h = Harness()
    with h as s:
        a, b = s.begin(), s.begin()
        s.arrived(b, ev(2))
        assert h.committed == []
        s.failed(a)
        assert h.committed == [2]


def test_feed_fills_gaps_with_remote_events_in_order() -> None:
    h = Harness()
    with h as s:
        s.attach(10)
        mine = s.begin()
        s.arrived(mine, ev(13))
        assert h.committed == []  # 11 and 12 are not accounted for yet
        s.remote([ev(11, "r"), ev(12, "r")], upto=13, own={13: ev(13)})
        assert h.committed == [11, 12, 13]
        assert s.next_seq == 14


def test_feed_skips_a_seq_missing_from_the_stream_once_no_local_append_can_bring_it() -> None:
    h = Harness()
    with h as s:
        s.attach(0)
        flying = s.begin()
        s.remote([ev(2, "r")], upto=2, own={})
        assert h.committed == []  # 1 could still be our own append's seq
        s.arrived(flying, ev(3))
        assert h.committed == [2, 3]  # it was not: 1 was deleted before the feed read it
        assert s.skipped == 1


def test_feed_commits_the_stream_copy_of_an_own_event_whose_emit_failed() -> None:
    h = Harness()
    with h as s:
        s.attach(0)
        ticket = s.begin()
        s.remote([], upto=1, own={1: ev(1, "mine")})
        assert h.committed == []
        s.failed(ticket)  # applied in Redis, but the reply was lost for good
        assert h.committed == [1]


def test_feed_waits_for_an_own_event_whose_reply_is_on_its_way() -> None:
    h = Harness()
    with h as s:
        s.attach(0)
        ticket = s.begin()
        s.remote([ev(2, "r")], upto=2, own={1: ev(1, "copy")})
        assert h.committed == []
        s.arrived(ticket, ev(1, "local"))
        assert h.committed == [1, 2]


def test_wait_times_out_skips_what_is_missing_and_drops_late_arrivals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(timeout=0.01)
    with h as s:
        s.attach(0)
        ticket = s.begin()
        s.arrived(ticket, ev(3), wait=True)  # 1 and 2 never come: the feed is stuck
        assert h.committed == [3]
        assert s.skipped == 2
        s.remote([ev(2, "r")], upto=3, own={})
        assert h.committed == [3]
        assert s.late == 1
    assert "skipping 2 missing seq(s): 1, 2" in caplog.text
    assert "arrived after its place in the order was skipped" in caplog.text


def test_attach_after_events_is_refused() -> None:
    h = Harness()
    with h as s:
        s.begin()
        with pytest.raises(BusError, match="before any event"):
            s.attach(0)


def test_wait_returns_once_another_thread_commits() -> None:
    h = Harness()
    with h as s:
        s.attach(0)
        ticket = s.begin()

        def feed() -> None:
            s.remote([ev(1, "r")], upto=2, own={})

        timer = threading.Timer(0.05, feed)
        timer.start()
        s.arrived(ticket, ev(2), wait=True)
        timer.join()
    assert h.committed == [1, 2]
    assert h.seq.skipped == 0


@given(
    seqs=st.permutations(list(range(1, 13))),
    remote_mask=st.lists(st.booleans(), min_size=12, max_size=12),
    feed_cut=st.integers(min_value=0, max_value=12),
)
def test_feed_any_interleaving_commits_everything_once_in_order(
    seqs: list[int], remote_mask: list[bool], feed_cut: int
) -> None:
    h = Harness()
    with h as s:
        s.attach(0)
        local = [seq for seq in seqs if not remote_mask[seq - 1]]
        tickets = {seq: s.begin() for seq in local}
        remote = sorted(seq for seq in seqs if remote_mask[seq - 1])
        own = {seq: ev(seq) for seq in local}
        # the feed reads the stream in two batches; local replies come in `seqs` order
        first = [seq for seq in remote if seq <= feed_cut]
        s.remote([ev(seq, "r") for seq in first], upto=feed_cut,
                 own={k: v for k, v in own.items() if k <= feed_cut})
        for seq in seqs:
            if seq in tickets:
                s.arrived(tickets[seq], ev(seq))
        s.remote([ev(seq, "r") for seq in remote if seq > feed_cut], upto=12,
                 own={k: v for k, v in own.items() if k > feed_cut})
    assert h.committed == list(range(1, 13))
    assert s.skipped == 0


@given(order=st.permutations(list(range(8))), fail=st.sets(st.integers(0, 7)))
def test_local_only_any_reply_order_commits_in_seq_order(
    order: list[int], fail: set[int]
) -> None:
    h = Harness()
    with h as s:
        tickets = [s.begin() for _ in range(8)]  # sent in this order: seq = index * 2 + 1
        for index in order:
            if index in fail:
                s.failed(tickets[index])
            else:
                s.arrived(tickets[index], ev(index * 2 + 1))
    assert h.committed == [i * 2 + 1 for i in range(8) if i not in fail]
