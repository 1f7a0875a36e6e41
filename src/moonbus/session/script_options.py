"""``--option`` values and script names for ``moonbus run`` (and ``serve``).

``--option k=v`` applies to every script; ``--option NAME:k=v`` only to the
script called NAME (its unique name, ``mining#2``, or its base name,
``mining``, which means every instance of that file). Later options win.

Typing: when the script's manifest has a default for ``k``, the text is
converted to the default's type by the host (``"5"`` → 5 for an int
default). Without a default (plain ``.lua`` files) the text is read the way
a user means it: ``true``/``false`` → boolean, an integer or decimal literal
→ number, anything else → string (``ore=iron``). Quote nothing: the shell
already split the words.

Pure functions; any thread may call them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moonbus.errors import ConfigError

__all__ = [
    "OptionSetting",
    "check_targets",
    "options_for",
    "parse_option",
    "typed_value",
    "unique_names",
]

_INT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(
    r"^[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$|^[+-]?[0-9]+[eE][+-]?[0-9]+$"
)
_MAX_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class OptionSetting:
    """One ``--option``: ``script`` is None when it applies to every script."""

    script: str | None
    key: str
    value: str


def parse_option(text: str) -> OptionSetting:
    """Parse ``k=v`` or ``script:k=v``; ``ConfigError`` naming the bad text."""
    key_part, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"bad --option {text!r}: expected KEY=VALUE or SCRIPT:KEY=VALUE")
    script: str | None = None
    if ":" in key_part:
        script, _, key_part = key_part.rpartition(":")
        if not script:
            raise ConfigError(f"bad --option {text!r}: empty script name before ':'")
    key = key_part.strip()
    if not key:
        raise ConfigError(f"bad --option {text!r}: empty option name")
    return OptionSetting(script=script, key=key, value=value)


def typed_value(text: str) -> Any:
    """``true``/``false`` → bool, integer/decimal literals → int/float, else the text."""
    if text == "true":
        return True
    if text == "false":
        return False
    if _INT.match(text):
        number = int(text)
        if -_MAX_INT - 1 <= number <= _MAX_INT:
            return number
        return text
    if _FLOAT.match(text):
        return float(text)
    return text


def unique_names(bases: Sequence[str]) -> list[str]:
    """Names for scripts in load order: the base name, then ``base#2``, ``base#3``..."""
    seen: dict[str, int] = {}
    taken: set[str] = set()
    names: list[str] = []
    for base in bases:
        n = seen.get(base, 0)
        while True:
            n += 1
            candidate = base if n == 1 else f"{base}#{n}"
            if candidate not in taken:
                break
        seen[base] = n
        taken.add(candidate)
        names.append(candidate)
    return names


def options_for(
    name: str,
    base: str,
    settings: Iterable[OptionSetting],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """The user options of the script ``name`` (an instance of ``base``), in order given.

    Values for keys with a manifest default stay text (the host converts them
    to the default's type); the others are typed with ``typed_value``.
    """
    options: dict[str, Any] = {}
    for s in settings:
        if s.script is not None and s.script not in (name, base):
            continue
        options[s.key] = s.value if s.key in defaults else typed_value(s.value)
    return options


def check_targets(settings: Iterable[OptionSetting], names: Sequence[str],
                  bases: Sequence[str]) -> None:
    """``ConfigError`` for a ``NAME:k=v`` whose NAME matches no script."""
    known = set(names) | set(bases)
    for s in settings:
        if s.script is not None and s.script not in known:
            raise ConfigError(
                f"--option {s.script}:{s.key}=...: no script named {s.script!r} "
                f"(scripts: {', '.join(names)})"
            )
