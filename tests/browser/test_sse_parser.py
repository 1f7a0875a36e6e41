"""The console's Server-Sent Events parser (static/sse.js), run in Chromium on
streams split at every possible place: line ends LF, CRLF (also split across
two reads) and CR alone, multi-line data, comments, ids that persist."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Served, missing

try:
    import selenium  # noqa: F401
except ImportError:
    missing("selenium missing: pip install selenium")

from tests.browser.pages import wait

PARSE = """
const parser = new window.MoonbusSse.SseParser(arguments[1]);
const messages = [];
for (const chunk of arguments[0]) messages.push(...parser.push(chunk));
return {messages, lastId: parser.lastId};
"""


@pytest.fixture
def sse(driver: Any, served: Served) -> Any:
    """Run the parser in the console page (no login needed: the page holds no data)."""
    driver.get(served.base)
    wait(driver).until(lambda d: d.execute_script("return !!window.MoonbusSse"))

    def parse(chunks: list[str], last_id: str | None = None) -> Any:
        return driver.execute_script(PARSE, chunks, last_id)

    return parse


def msg(event: str, data: str, id: str | None) -> dict[str, Any]:
    return {"event": event, "data": data, "id": id}


STREAM = ('id: 41\nevent: event\ndata: {"seq":41}\n\n'
          ": ping\n\n"
          'id: 42\r\nevent: event\r\ndata: {"seq":42}\r\n\r\n'
          "event: log\rdata: first\rdata: second\r\r")
EXPECTED = [msg("event", '{"seq":41}', "41"), msg("event", '{"seq":42}', "42"),
            msg("log", "first\nsecond", "42")]


def test_a_whole_stream_in_one_read(sse: Any) -> None:
    assert sse([STREAM]) == {"messages": EXPECTED, "lastId": "42"}


def test_the_same_stream_split_at_every_place_gives_the_same_messages(sse: Any) -> None:
    for cut in range(1, len(STREAM)):
        assert sse([STREAM[:cut], STREAM[cut:]])["messages"] == EXPECTED, cut
    assert sse(list(STREAM))["messages"] == EXPECTED  # one character per read


def test_a_message_ending_in_cr_is_complete_without_waiting_for_the_next_read(sse: Any) -> None:
    assert sse(["data: a\r\r"])["messages"] == [msg("message", "a", None)]
    # ... and an LF that then starts the next read is the rest of that CRLF
    assert sse(["data: a\r", "\ndata: b\r\n\r\n"])["messages"] == [msg("message", "a\nb", None)]


def test_field_details(sse: Any) -> None:
    out = sse(["data:x\n\n", "data:  two spaces\n\n", "data\n\n", "event: ping\n\n",
               "id: 7\0\ndata: y\n\n", "retry: 10\nnonsense: 1\ndata: z\n\n"], "5")
    assert out["messages"] == [
        msg("message", "x", "5"),            # no space after the colon
        msg("message", " two spaces", "5"),  # one space is taken away, not two
        msg("message", "", "5"),             # "data" alone is an empty line of data
        # "event: ping" with no data is no message
        msg("message", "y", "5"),            # an id holding NUL is ignored
        msg("message", "z", "5"),            # retry and unknown fields are ignored
    ]
    assert out["lastId"] == "5"  # the id a resumed stream started from, until a new one
