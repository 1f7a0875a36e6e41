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
tokens (``moonbus.lua.tokens``, the lint's tokenizer: strings and comments
are never edited) and counts blocks: ``function``,
``do``, ``if`` and ``repeat`` open one, ``end`` and ``until`` close one
(``while``/``for`` open theirs with their ``do``; ``elseif``/``else`` neither).

Pure functions over strings; any thread may call them.
"""

from __future__ import annotations

from typing import Final

from moonbus.lua.tokens import Token, tokenize
from moonbus.lua.value_printer import FORMATTER

__all__ = ["FORMATTER", "is_incomplete", "promote_locals"]

_OPEN: Final = frozenset({"function", "do", "if", "repeat"})
_CLOSE: Final = frozenset({"end", "until"})


def _words(tok: Token) -> bool:
    return tok.kind in ("name", "keyword")


def promote_locals(source: str) -> str:
    """``source`` with its top-level ``local`` declarations made environment
    assignments (see the module docstring). Text inside strings and comments
    is never touched."""
    toks = tokenize(source)  # strings and comments are single tokens or skipped
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), in order
    depth = 0
    for k, tok in enumerate(toks):
        if not _words(tok):
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


def _local_edit(toks: list[Token], k: int) -> list[tuple[int, int, str]]:
    """The edits turning the ``local`` at ``toks[k]`` into an assignment, or []."""
    local = toks[k]
    drop = (local.start, local.end, "")
    if k + 1 < len(toks) and toks[k + 1].text == "function":
        return [drop]
    j = k + 1
    last: Token | None = None
    while j < len(toks) and _words(toks[j]):
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
