"""The pure text side of ``moonbus repl``: chunk rewriting and the result printer.

Locals between lines: each line is compiled as its own chunk (as in the
standalone ``lua`` prompt), so a plain ``local x = 1`` would be gone by the
next line. The REPL keeps them by rewriting every *top-level* ``local``
declaration of a line into an assignment to the REPL's environment (the
script's globals): ``local x, y = 1, 2`` becomes ``x, y = 1, 2``, ``local
function f`` becomes ``function f``, ``local z`` becomes ``z = nil``. Locals
inside blocks and functions are left alone (they are real locals there), and
declarations with attributes (``<const>``, ``<close>``) too, since an
environment variable cannot keep their meaning. The cost of the choice: a
REPL "local" is visible to functions defined on other lines (that is the
point) and can shadow a global of the same name, as any assignment would.

``promote_locals`` needs to know what is top level, so it scans the line's
tokens (skipping strings and comments) and counts blocks: ``function``,
``do``, ``if`` and ``repeat`` open one, ``end`` and ``until`` close one
(``while``/``for`` open theirs with their ``do``; ``elseif``/``else`` neither).

Pure functions over strings; any thread may call them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from moonbus.lua.value_printer import FORMATTER

__all__ = ["FORMATTER", "is_incomplete", "promote_locals"]

_OPEN: Final = frozenset({"function", "do", "if", "repeat"})
_CLOSE: Final = frozenset({"end", "until"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*(?:[eEpP][+-][0-9]+)?|\.[0-9][0-9A-Za-z_]*")
_LONG_OPEN = re.compile(r"\[(=*)\[")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class _Tok:
    text: str
    start: int
    end: int
    word: bool  # a name or keyword


def _skip_long(source: str, start: int, level: int) -> int:
    close = "]" + "=" * level + "]"
    end = source.find(close, start)
    return len(source) if end < 0 else end + len(close)


def _skip_string(source: str, start: int, quote: str) -> int:
    i = start
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if c == quote or c == "\n":
            return i + 1
        i += 1
    return i


def _tokens(source: str) -> list[_Tok]:
    """Names, keywords and punctuation with their offsets; strings, numbers and
    comments are skipped (the rewrite never needs them)."""
    out: list[_Tok] = []
    i, n = 0, len(source)
    while i < n:
        space = _SPACE.match(source, i)
        if space:
            i = space.end()
            continue
        if source.startswith("--", i):
            long = _LONG_OPEN.match(source, i + 2)
            if long:
                i = _skip_long(source, long.end(), len(long.group(1)))
            else:
                nl = source.find("\n", i)
                i = n if nl < 0 else nl + 1
            continue
        long = _LONG_OPEN.match(source, i)
        if long:
            i = _skip_long(source, long.end(), len(long.group(1)))
            continue
        c = source[i]
        if c in "\"'":
            i = _skip_string(source, i + 1, c)
            continue
        number = _NUMBER.match(source, i)
        if number:
            i = number.end()
            continue
        name = _NAME.match(source, i)
        if name:
            out.append(_Tok(name.group(), i, name.end(), True))
            i = name.end()
            continue
        out.append(_Tok(c, i, i + 1, False))
        i += 1
    return out


def promote_locals(source: str) -> str:
    """``source`` with its top-level ``local`` declarations made environment
    assignments (see the module docstring). Text inside strings and comments
    is never touched."""
    toks = _tokens(source)
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), in order
    depth = 0
    for k, tok in enumerate(toks):
        if not tok.word:
            continue
        if tok.text in _OPEN:
            depth += 1
        elif tok.text in _CLOSE:
            depth = max(0, depth - 1)
        elif tok.text == "local" and depth == 0:
            edit = _local_edit(toks, k)
            if edit:
                edits.extend(edit)
    for start, end, text in reversed(edits):
        source = source[:start] + text + source[end:]
    return source


def _local_edit(toks: list[_Tok], k: int) -> list[tuple[int, int, str]]:
    """The edits turning the ``local`` at ``toks[k]`` into an assignment, or []."""
    local = toks[k]
    drop = (local.start, local.end, "")
    if k + 1 < len(toks) and toks[k + 1].text == "function":
        return [drop]
    j = k + 1
    last: _Tok | None = None
    while j < len(toks) and toks[j].word:
        last = toks[j]
        if j + 1 < len(toks) and toks[j + 1].text == ",":
            j += 2
            continue
        j += 1
        break
    if last is None:
        return []
    following = toks[j].text if j < len(toks) else ""
    if following == "<":
        return []  # <const>/<close>: a real local, left as written
    if following == "=":
        return [drop]
    return [drop, (last.end, last.end, " = nil")]


def is_incomplete(message: str) -> bool:
    """True when a syntax error only says the chunk ended too soon (read more
    lines), as the standalone ``lua`` prompt decides."""
    return message.rstrip().endswith("<eof>")
