"""A small Lua 5.4 tokenizer for ``moonbus check``'s lint.

Why not Lua itself: the sandbox has no ``string.dump`` and no bytecode
listing, and the lint must not run the script. The lint only needs names,
keywords and punctuation with line numbers, so this tokenizer skips comments
and string contents (long brackets included) and reports everything else.
It is only ever run on source that Lua has already compiled, so it does not
try to diagnose malformed input: an unterminated string simply ends the
token stream.

Pure functions over strings; any thread may call them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["KEYWORDS", "Token", "tokenize"]

KEYWORDS: Final = frozenset({
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
})

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"0[xX](?:[0-9a-fA-F]*\.?[0-9a-fA-F]*)(?:[pP][+-]?[0-9]+)?"
    r"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
)
_LONG_OPEN = re.compile(r"\[(=*)\[")
_SYMBOLS = (
    "...", "..", "==", "~=", "<=", ">=", "<<", ">>", "//", "::",
    "+", "-", "*", "/", "%", "^", "#", "&", "~", "|", "<", ">", "=",
    "(", ")", "{", "}", "[", "]", ";", ":", ",", ".",
)


@dataclass(frozen=True, slots=True)
class Token:
    """``kind`` is "name", "keyword", "symbol", "number" or "string";
    ``start``/``end``: its offsets in the source (for rewrites, e.g. the REPL's)."""

    kind: str
    text: str
    line: int
    start: int = 0
    end: int = 0


def _long_bracket_end(source: str, start: int, level: int) -> int:
    """Index just past the closing ``]=*]`` of a long bracket opened before ``start``."""
    close = "]" + "=" * level + "]"
    end = source.find(close, start)
    return len(source) if end < 0 else end + len(close)


def _short_string_end(source: str, start: int, quote: str) -> int:
    """Index just past the closing quote of a short string whose body starts at ``start``."""
    i = start
    n = len(source)
    while i < n:
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if c == quote or c == "\n":
            return i + 1
        i += 1
    return n


def tokenize(source: str) -> list[Token]:
    """The tokens of ``source`` (comments dropped, strings as one "string" token)."""
    tokens: list[Token] = []
    i = 0
    n = len(source)
    line = 1
    if source.startswith("#"):  # a shebang line, which Lua skips too
        i = source.find("\n")
        i = n if i < 0 else i
    while i < n:
        c = source[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        if source.startswith("--", i):
            opened = _LONG_OPEN.match(source, i + 2)
            if opened:
                end = _long_bracket_end(source, opened.end(), len(opened.group(1)))
            else:
                end = source.find("\n", i)
                end = n if end < 0 else end
            line += source.count("\n", i, end)
            i = end
            continue
        if c in "\"'":
            end = _short_string_end(source, i + 1, c)
            tokens.append(Token("string", source[i:end], line, i, end))
            line += source.count("\n", i, end)
            i = end
            continue
        if c == "[":
            opened = _LONG_OPEN.match(source, i)
            if opened:
                end = _long_bracket_end(source, opened.end(), len(opened.group(1)))
                tokens.append(Token("string", source[i:end], line, i, end))
                line += source.count("\n", i, end)
                i = end
                continue
        if c.isdigit() or (c == "." and i + 1 < n and source[i + 1].isdigit()):
            match = _NUMBER.match(source, i)
            assert match is not None
            tokens.append(Token("number", match.group(0), line, i, match.end()))
            i = match.end()
            continue
        match = _NAME.match(source, i)
        if match:
            text = match.group(0)
            tokens.append(Token("keyword" if text in KEYWORDS else "name", text, line, i,
                                match.end()))
            i = match.end()
            continue
        for symbol in _SYMBOLS:
            if source.startswith(symbol, i):
                tokens.append(Token("symbol", symbol, line, i, i + len(symbol)))
                i += len(symbol)
                break
        else:
            i += 1  # a character Lua would have rejected; the source compiled, so skip it
    return tokens
