"""One script's handler-error log: each distinct error once, repeats counted.

A handler that fails on every event fails 60 times a second in a game; a
full traceback per failure buries everything else in the log. So each
``ScriptHost`` keeps a ``HandlerErrorLog``: the first occurrence of an error
(same ``what`` and same first line, which carries the ``file:line``) is
logged in full, with a Lua-only traceback (``clean_traceback``); identical
errors after it are only counted, and summarised as ``... repeated N more
times in the last X s`` when the window (``HostSettings.error_log_window``)
has passed, when a different error of the same script comes, or when the
script stops. The script's ``handler_errors`` counter still counts every one.

At most ``HostSettings.max_distinct_errors`` distinct errors are tracked per
script (the oldest is summarised and forgotten first), so an error text that
changes on every event (it quotes ``e.seq``) cannot grow the log's memory.

Threads: ``record`` is called by whichever thread ran the failing handler
(the emitting thread, the event thread or a scheduler worker) and ``due`` by
the runtime's notifier; one lock guards the counts. Nothing is logged under
the lock: the methods return the lines and the caller logs them.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ErrorLine", "HandlerErrorLog", "clean_traceback", "format_error"]

# One traceback frame: "\tfile.lua:12: in function 'f'".
_FRAME = re.compile(r"^\s*(?P<src>[^:\s][^:]*):(?P<line>\d+):")


def clean_traceback(trace: str, chunk_prefix: str) -> str:
    """The script's own frames of a Lua traceback, without the error line.

    Keeps ``stack traceback:`` and the frames whose source starts with
    ``chunk_prefix`` (the script's file, or its folder for folder scripts);
    drops the repeated error message, ``[C]`` frames, moonbus's own chunks
    (``=moonbus``, the sandbox's ``<python>`` trampolines) and ``(...tail
    calls...)``: the host's plumbing says nothing about the script's bug.
    """
    _, found, frames = trace.partition("stack traceback:")
    if not found:
        return ""
    kept = []
    for line in frames.splitlines():
        match = _FRAME.match(line)
        if match is not None and match.group("src").startswith(chunk_prefix):
            kept.append("\t" + line.strip())
    return "stack traceback:\n" + "\n".join(kept) if kept else ""


def format_error(what: str, exc: BaseException, chunk_prefix: str) -> tuple[str, str]:
    """(headline, full text) of an error: ``what: message`` once, then the
    script's frames (see ``clean_traceback``)."""
    message = str(exc).split("\n", 1)[0].strip()
    headline = f"{what}: {message}"
    trace = clean_traceback(getattr(exc, "lua_traceback", "") or "", chunk_prefix)
    return headline, f"{headline}\n{trace}" if trace else headline


@dataclass(frozen=True)
class ErrorLine:
    """One line to log: a first occurrence (``count`` 1, ``first``) or a
    summary of ``count`` repeats over ``seconds``."""

    headline: str
    text: str
    count: int
    first: bool
    seconds: float = 0.0


class _Entry:
    __slots__ = ("count", "since")

    def __init__(self, since: float) -> None:
        self.count = 0  # repeats since the last line logged for this error
        self.since = since


class HandlerErrorLog:
    """Counts one script's handler errors and says which lines to log."""

    def __init__(self, *, chunk_prefix: str, window: float, max_distinct: int) -> None:
        self._prefix = chunk_prefix
        self.window = window
        self.max_distinct = max_distinct
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.forgotten = 0  # distinct errors dropped at max_distinct (counted by the hub)

    def record(self, what: str, exc: BaseException, now: float,
               clip: Callable[[str], str] | None = None) -> list[ErrorLine]:
        """Count one error; the lines to log now (possibly none). ``clip`` caps
        the headline (the key: so the texts this log keeps are bounded too)."""
        headline, text = format_error(what, exc, self._prefix)
        if clip is not None:
            short = clip(headline)
            if short != headline:
                headline, text = short, short + text[len(headline):]
        lines: list[ErrorLine] = []
        with self._lock:
            entry = self._entries.get(headline)
            if entry is not None:
                entry.count += 1
                self._entries.move_to_end(headline)
                if now - entry.since >= self.window:
                    lines.append(self._summary(headline, entry, now))
                return lines
            # A different error: what the others repeated so far is said first.
            for other, old in self._entries.items():
                if old.count:
                    lines.append(self._summary(other, old, now))
            while len(self._entries) >= max(1, self.max_distinct):
                self._entries.popitem(last=False)
                self.forgotten += 1
            self._entries[headline] = _Entry(now)
        lines.append(ErrorLine(headline, text, 1, True))
        return lines

    def due(self, now: float, *, force: bool = False) -> list[ErrorLine]:
        """Summaries whose window has passed (all pending ones with ``force``)."""
        with self._lock:
            return [self._summary(h, e, now) for h, e in self._entries.items()
                    if e.count and (force or now - e.since >= self.window)]

    @property
    def pending(self) -> bool:
        """Whether some repeats are counted but not yet summarised."""
        with self._lock:
            return any(e.count for e in self._entries.values())

    def reset(self) -> None:
        """Forget every error (a new run of the script)."""
        with self._lock:
            self._entries.clear()

    @staticmethod
    def _summary(headline: str, entry: _Entry, now: float) -> ErrorLine:
        count, seconds = entry.count, max(0.0, now - entry.since)
        entry.count, entry.since = 0, now
        times = "time" if count == 1 else "times"
        text = f"{headline} ... repeated {count} more {times} in the last {seconds:.1f} s"
        return ErrorLine(headline, text, count, False, seconds)
