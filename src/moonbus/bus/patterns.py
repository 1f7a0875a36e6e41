"""Event-type names and subscription patterns (pure functions).

A type name is a non-empty string of at most 128 characters without
whitespace or ``*``. A pattern is either an exact type name, ``"*"`` (every
event) or a prefix pattern ending in ``*`` such as ``"player:*"`` (every type
that starts with ``"player:"``). ``*`` anywhere else is an error, so a typo
never silently subscribes to nothing.
"""

from __future__ import annotations

from moonbus.errors import BusError

__all__ = ["check_pattern", "check_type_name", "matches"]

MAX_TYPE_LENGTH = 128


def check_type_name(name: object) -> str:
    """Return ``name`` if it is a valid event type, else raise ``BusError``."""
    if not isinstance(name, str):
        raise BusError(f"event type must be a string, got {type(name).__name__}")
    if not name or len(name) > MAX_TYPE_LENGTH:
        raise BusError(f"event type must be 1..{MAX_TYPE_LENGTH} characters, got {name!r}")
    if "*" in name or any(ch.isspace() for ch in name):
        raise BusError(f"event type {name!r} may not contain '*' or whitespace")
    return name


def check_pattern(pattern: object) -> str:
    """Return ``pattern`` if valid (exact name, ``*`` or ``prefix*``), else raise."""
    if not isinstance(pattern, str):
        raise BusError(f"event pattern must be a string, got {type(pattern).__name__}")
    if pattern == "*":
        return pattern
    if pattern.endswith("*"):
        check_type_name(pattern[:-1])
        return pattern
    return check_type_name(pattern)


def matches(pattern: str, event_type: str) -> bool:
    """True when ``event_type`` is selected by ``pattern``."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type
