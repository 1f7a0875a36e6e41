"""What a replay found: the first divergence (or none), and how ``moonbus replay`` shows it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from moonbus.errors import MoonbusError

__all__ = ["Divergence", "ReplayDivergenceError", "ReplayResult"]

#: Kinds of divergence, in the words the report uses.
KINDS = ("event", "missing event", "extra event", "api call", "final value")


class ReplayDivergenceError(MoonbusError):
    """Raised into a script whose host API call the recording cannot answer
    (another method, other arguments, or more calls than were recorded)."""


@dataclass
class Divergence:
    """The first place where a replay differs from its recording.

    ``seq``/``tick``: where in the recording (the expected event's seq, or
    the seq and tick at which the recorded API call began; for a final value,
    the recording's last seq). ``actual_seq``/``actual_tick``: where in the
    replay. ``script``: the script that emitted or called (None when unknown).
    """

    kind: str
    seq: int | None
    tick: int | None
    script: str | None
    expected: str
    actual: str
    actual_seq: int | None = None
    actual_tick: int | None = None

    def describe(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "seq ?"
        if self.tick is not None:
            where += f" (tick {self.tick})"
        lines = [f"divergence ({self.kind}) at {where}, script {self.script or '?'}",
                 f"  expected: {self.expected}",
                 f"  actual:   {self.actual}"]
        if self.actual_seq is not None:
            lines.append(f"  (replay seq {self.actual_seq}, tick {self.actual_tick})")
        return "\n".join(lines)


@dataclass
class ReplayResult:
    """A replay's outcome; ``counts``: events, script_events, host_events, calls, ticks, scripts."""

    divergence: Divergence | None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def identical(self) -> bool:
        return self.divergence is None

    def events_per_second(self) -> float:
        return self.counts.get("events", 0) / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        if self.divergence is None:
            c = self.counts
            return (f"identical: {c.get('script_events', 0)} script events, "
                    f"{c.get('host_events', 0)} host events, {c.get('calls', 0)} API calls, "
                    f"{c.get('scripts', 0)} scripts, {c.get('ticks', 0)} ticks")
        return self.divergence.describe()

    def to_json(self) -> str:
        return json.dumps({
            "identical": self.identical,
            "counts": self.counts,
            "seconds": round(self.seconds, 6),
            "divergence": None if self.divergence is None else asdict(self.divergence),
        }, ensure_ascii=False)


def short(value: Any, limit: int = 400) -> str:
    """One line of JSON for a report, cut at ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
