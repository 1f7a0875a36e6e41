"""The event half of ``moonbus check``'s lint: event names no one declared.

SPEC §10: the host declares its event types (``moonbus.app.EventSpec``), and
``check`` warns about an event name that no one declared. A script's
``events:on("gem_colected", ...)`` (a typo) would otherwise subscribe to
nothing and never say so; ``events.EventType.GEM_COLECTED`` would be ``nil``
and fail only when that line runs.

What counts as declared: the app's event types, and every name that one of
the scripts checked together emits with ``events:emit("name", ...)`` (custom
events between scripts). What is looked at: string literals written
directly in ``events:on``/``events:once``/``events:emit`` calls and
``events.EventType.KEY`` chains. Names built at run time, patterns
(``"player:*"``, ``"*"``), strings with escapes and an ``events`` that a
script rebinds are not judged: like the globals lint, it stays quiet where it
cannot tell.

Pure functions over source text; any thread may call them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from moonbus.cli.lint import LintFinding
from moonbus.lua.event_uses import EventUses, event_uses

__all__ = ["EventUses", "event_uses", "lint_events"]


def lint_events(
    uses: EventUses,
    event_types: Mapping[str, str],
    emitted: Collection[str],
    app_name: str,
) -> list[LintFinding]:
    """Warnings for ``uses``: subscriptions to names neither ``event_types``
    (key → name) nor ``emitted`` holds, and unknown ``EventType`` keys."""
    names = set(event_types.values()) | set(emitted)
    findings: list[LintFinding] = []
    for line, name in uses.subscribed:
        if "*" in name or name in names:
            continue
        findings.append(LintFinding(
            line,
            f"event '{name}' is not declared by the {app_name} and no checked script emits "
            "it (a typo? events.EventType lists the declared ones)",
        ))
    for line, key in uses.keys:
        if key not in event_types:
            known = ", ".join(sorted(event_types))
            findings.append(LintFinding(
                line, f"events.EventType.{key} is not a declared event type (nil); "
                f"the {app_name} declares {known}",
            ))
    return findings
