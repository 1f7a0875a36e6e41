"""A script's reports to its host: error log lines and ``ScriptEvent`` records.

``ScriptHost`` owns one ``ScriptReporter`` and calls it where an error is
recorded or a status changes; the reporter decides what is logged (each
distinct handler error once, repeats summarised: ``moonbus.host.error_log``)
and what the host hears (``moonbus.host.script_events``). Keeping this out of
``ScriptHost`` keeps the lifecycle code about the lifecycle.

Threads: ``handler_error`` is called by whichever thread ran the handler,
``status`` by the thread changing the status (under the script's control
lock: it only queues), ``write_due`` by the hub's notifier.
"""

from __future__ import annotations

from collections import deque

from moonbus.host.context import ScriptContext
from moonbus.host.error_log import ErrorLine, HandlerErrorLog, format_error
from moonbus.host.memory_caps import ScriptLimitCounters, clip
from moonbus.host.script_events import ScriptEvent
from moonbus.host.source import ScriptSource

__all__ = ["ScriptReporter", "chunk_prefix"]


def chunk_prefix(source: ScriptSource) -> str:
    """What the script's own traceback frames start with: its file name, or
    its folder for a folder script (``main.lua`` and its modules)."""
    return f"{source.folder.name}/" if source.folder is not None else source.chunkname


class ScriptReporter:
    """Logs one script's errors and posts its ``ScriptEvent`` records."""

    def __init__(self, *, name: str, ctx: ScriptContext, source: ScriptSource,
                 errors: deque[str], limits: ScriptLimitCounters) -> None:
        self._name = name
        self._limits = limits
        self._ctx = ctx
        self._errors = errors
        self._prefix = chunk_prefix(source)
        settings = ctx.settings
        self._log = HandlerErrorLog(chunk_prefix=self._prefix,
                                    window=settings.error_log_window,
                                    max_distinct=settings.max_distinct_errors)
        self._key = id(self)
        self.status_now = "loaded"

    def retarget(self, source: ScriptSource) -> None:
        """The script was reloaded from ``source``."""
        self._prefix = chunk_prefix(source)
        self._log = HandlerErrorLog(chunk_prefix=self._prefix,
                                    window=self._ctx.settings.error_log_window,
                                    max_distinct=self._ctx.settings.max_distinct_errors)

    # ----------------------------------------------------------------- errors
    def error_text(self, what: str, exc: BaseException) -> tuple[str, str]:
        """(``what: message``, the same with the script's traceback frames)."""
        return format_error(what, exc, self._prefix)

    def handler_error(self, what: str, exc: BaseException) -> None:
        """One handler error: kept and logged if it is new, else counted."""
        settings = self._ctx.settings
        log = self._log
        log.window = settings.error_log_window
        log.max_distinct = settings.max_distinct_errors
        forgotten = log.forgotten
        lines = log.record(what, exc, self._ctx.scheduler.clock(), clip=self._clip_error)
        for line in lines:
            if line.first and line.headline not in self._errors:
                self._errors.append(line.headline)
        self._write(lines)
        hub = self._ctx.script_events
        if hub is not None:
            if log.forgotten != forgotten:
                hub.count("errors_forgotten", log.forgotten - forgotten)
            hub.watch_log(self._key, log, self.write_due)

    def write_due(self, now: float, force: bool) -> None:
        """Log the summaries of repeats whose window has passed (all with ``force``)."""
        self._write(self._log.due(now, force=force))

    def _clip_error(self, headline: str) -> str:
        """Error texts are capped (SPEC §4b): a script chooses its messages."""
        return self._limits.clip(headline, self._ctx.settings.max_error_length,
                                 "truncated_errors")

    def _write(self, lines: list[ErrorLine]) -> None:
        tick = self._ctx.tick()
        hub = self._ctx.script_events
        for line in lines:
            text, _ = clip(line.text, self._ctx.settings.max_log_line)
            self._ctx.log(self._name, "host", "error", text, tick)
            if hub is not None:
                hub.post(
                    ScriptEvent(self._name, "handler_error", self.status_now, line.headline
                                if line.first else line.text, tick, line.count),
                    emit=line.first,
                )

    # ----------------------------------------------------------------- status
    def status(self, what: str, status: str) -> None:
        """The script started, stopped or failed (see ``ObservedStatus``).

        Called under the script's state lock: it only queues. The notifier
        logs the last summaries of a script that ended, then tells the host.
        """
        self.status_now = status
        hub = self._ctx.script_events
        error = self._errors[-1] if what == "failed" and self._errors else None
        event = ScriptEvent(self._name, what, status, error, self._ctx.tick())
        if hub is None:
            return
        if what == "started":
            hub.post(event)
            return
        log, key = self._log, self._key

        def last_summaries() -> None:
            self._write(log.due(self._ctx.scheduler.clock(), force=True))

        hub.post(event, before=last_summaries, forget=key)
