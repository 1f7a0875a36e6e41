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
from dataclasses import dataclass, field

from moonbus.cli.lint import LintFinding
from moonbus.cli.lua_tokens import Token, tokenize

__all__ = ["EventUses", "event_uses", "lint_events"]


@dataclass
class EventUses:
    """Event names and ``EventType`` keys one file mentions, with their lines."""

    subscribed: list[tuple[int, str]] = field(default_factory=list)
    emitted: set[str] = field(default_factory=set)
    keys: list[tuple[int, str]] = field(default_factory=list)


def _literal(token: Token) -> str | None:
    text = token.text
    if token.kind != "string" or len(text) < 2 or text[0] not in "\"'" or "\\" in text:
        return None
    return text[1:-1]


def _call_argument(tokens: list[Token], i: int) -> Token | None:
    """The first argument of a call whose name ends at ``tokens[i]``, if a string."""
    if i + 1 < len(tokens) and tokens[i + 1].kind == "string":
        return tokens[i + 1]  # events:on "name"
    if i + 2 < len(tokens) and tokens[i + 1].text == "(" and tokens[i + 2].kind == "string":
        return tokens[i + 2]
    return None


def event_uses(source: str) -> EventUses:
    """What ``source`` subscribes to, emits and reads from ``events.EventType``."""
    tokens = tokenize(source)
    uses = EventUses()
    for i, tok in enumerate(tokens):
        if tok.kind != "name" or tok.text != "events" or i + 2 >= len(tokens):
            continue
        if i > 0 and tokens[i - 1].text in (".", ":"):
            continue  # something.events: not the global
        sep, member = tokens[i + 1], tokens[i + 2]
        if sep.text == ":" and member.text in ("on", "once", "emit"):
            arg = _call_argument(tokens, i + 2)
            if arg is None or (name := _literal(arg)) is None:
                continue
            if member.text == "emit":
                uses.emitted.add(name)
            else:
                uses.subscribed.append((arg.line, name))
        elif (sep.text == "." and member.text == "EventType" and i + 4 < len(tokens)
              and tokens[i + 3].text == "." and tokens[i + 4].kind == "name"):
            uses.keys.append((tokens[i + 4].line, tokens[i + 4].text))
    return uses


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
