"""SSE readers for the ``http_streams`` bench: many clients in one thread each.

Run as a program (``python _sse_readers.py URL COUNT LAST``) in a process of
its own, so the readers do not share the game's interpreter lock (browsers
do not either); it prints one JSON line ``{"seen": [...], "dropped": N,
"errors": [...], "finished_at": T}`` when every reader saw seq ``LAST`` (or
ended); ``T`` is when the last one did (``time.time()``, comparable across
processes on one machine). The bench
also uses ``Reader`` in-process for the latency row. Imports nothing of
moonbus, so the program runs from its file path.

Threads: each ``Reader`` is its own thread; ``main`` starts and joins them.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["Reader", "main"]


class Reader(threading.Thread):
    """One SSE client: reads ``url`` until it saw seq ``last`` or was dropped."""

    def __init__(self, url: str, last: int,
                 on_frame: Callable[[bytes], None] | None = None) -> None:
        super().__init__(name="bench-sse-reader", daemon=True)
        self.url, self.last, self.on_frame = url, last, on_frame
        self.seen = 0
        self.dropped = False
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        import httpx

        self.finished_at = 0.0

        try:
            with httpx.Client(timeout=120) as client, client.stream("GET", self.url) as response:
                if self.on_frame is None:
                    self._count(response.iter_bytes())
                else:
                    self._parse(response.iter_lines())
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.finished_at = time.time()
            self.done.set()

    def _count(self, chunks: Iterator[bytes]) -> None:
        """Count frames without parsing them line by line."""
        tail = b""
        for chunk in chunks:
            buf = tail + chunk
            end = buf.rfind(b"\n\n") + 2
            whole, tail = buf[:end], buf[end:]
            self.seen += whole.count(b"id: ")
            if b"event: dropped" in whole:
                self.dropped = True
                return
            last = whole.rfind(b"id: ")
            if last >= 0 and int(whole[last + 4:whole.index(b"\n", last)]) >= self.last:
                return

    def _parse(self, lines: Iterator[str]) -> None:
        assert self.on_frame is not None
        for line in lines:
            if line.startswith("id: "):
                self.seen += 1
                if int(line[4:]) >= self.last:
                    return
            elif line.startswith("data: "):
                self.on_frame(line[6:].encode())


def main(argv: list[str]) -> int:
    """``URL COUNT LAST``: run the readers, print the JSON summary."""
    url, count, last = argv[0], int(argv[1]), int(argv[2])
    readers = [Reader(url, last) for _ in range(count)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(300)
    print(json.dumps({"seen": [r.seen for r in readers],
                      "finished_at": max(r.finished_at for r in readers),
                      "dropped": sum(r.dropped for r in readers),
                      "errors": [repr(r.error) for r in readers if r.error is not None]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
