"""Which event names a script's source mentions, read from its tokens.

Used below the command line too: ``moonbus check`` lints undeclared names
(``moonbus.cli.event_lint``) and the script host learns the names a script
emits when it loads (``moonbus.host.event_names``), so this pure reading of
the source lives with the Lua tokenizer. Only string literals written
directly in ``events:on``/``events:once``/``events:emit`` calls and
``events.EventType.KEY`` chains count; names built at run time are not seen.

Pure functions over source text; any thread may call them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from moonbus.lua.tokens import Token, tokenize

__all__ = ["EventUses", "event_uses"]


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
