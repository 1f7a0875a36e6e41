"""The light lint of ``moonbus check``: globals a script should not touch.

What it reports (each a warning; the script still compiles and runs):

* an assignment to a global other than the lifecycle functions ``on_start``,
  ``poll`` and ``on_stop`` (a global is per engine: the event engine and the
  main engine each have their own, so a global counter silently splits in
  two; ``local`` or ``shared`` is what the script author wants);
* a read of a global that is neither a Lua, moonbus or game global nor
  assigned anywhere in the file (usually a typo: ``loger.info``);
* a field of a standard library that the sandbox removed (``os.execute``,
  ``string.dump``);
* a function whose name is a near miss of a lifecycle function
  (``onStart``, ``Poll``, ``script:on_strat``): moonbus would never call it,
  and the script would sit "running" with no poll ("did you mean on_start?");
* a host API call, a shared-value write or an ``events:emit`` in top-level
  code: the chunk runs once in each engine, so the side effect happens
  twice (move it into ``on_start`` or a handler);
* ``os.time()``, ``os.clock()`` or ``os.date(fmt)`` without a time argument:
  the wall clock in a real-time run, which a replay cannot reproduce
  (``moonbus replay``; in virtual time they read the virtual clock).

How: a scope-aware walk over the tokens (``moonbus.lua.tokens``), tracking ``local``
declarations, function parameters, ``for`` variables and blocks. It is
deliberately conservative: where it cannot tell, it stays quiet, so it may
miss a problem but does not invent one. It never runs the script.

Pure functions; any thread may call them.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from moonbus.lua.tokens import Token, tokenize

__all__ = ["LIFECYCLE_GLOBALS", "LintFinding", "assigned_globals", "lint_globals"]

LIFECYCLE_GLOBALS: Final = frozenset({"on_start", "poll", "on_stop"})
# Shared-handle methods that change a value (a read at top level is harmless).
SHARED_WRITES: Final = frozenset({"set", "increment", "decrement", "add", "subtract", "append",
                                  "toggle", "remove", "clear"})


def lifecycle_near_miss(name: str) -> str | None:
    """The lifecycle function ``name`` was probably meant to be, if it is a near miss."""
    if name in LIFECYCLE_GLOBALS:
        return None
    folded = name.lower().replace("_", "")
    for real in sorted(LIFECYCLE_GLOBALS):
        if folded == real.replace("_", ""):
            return real
    close = difflib.get_close_matches(name.lower(), sorted(LIFECYCLE_GLOBALS), n=1, cutoff=0.8)
    return close[0] if close else None


@dataclass(frozen=True, slots=True)
class LintFinding:
    line: int
    message: str


@dataclass
class _Block:
    kind: str
    names: set[str] = field(default_factory=set)
    brackets: list[str] = field(default_factory=list)


class _Walker:
    def __init__(
        self,
        tokens: list[Token],
        known: Collection[str],
        libraries: Mapping[str, Collection[str]],
        host_globals: Collection[str] = (),
    ) -> None:
        self.t = tokens
        self.known = known
        self.libraries = libraries
        self.host = host_globals
        self.side_effect_lines: set[int] = set()
        self.blocks: list[_Block] = [_Block("chunk")]
        self.pending_loop: set[str] | None = None
        self.assigned: dict[str, int] = {}
        self.reads: dict[str, int] = {}
        self.findings: list[LintFinding] = []

    # ------------------------------------------------------------ helpers
    def tok(self, i: int) -> Token | None:
        return self.t[i] if 0 <= i < len(self.t) else None

    def is_(self, i: int, text: str) -> bool:
        t = self.tok(i)
        return t is not None and t.kind in ("symbol", "keyword") and t.text == text

    def is_name(self, i: int) -> bool:
        t = self.tok(i)
        return t is not None and t.kind == "name"

    def declared(self, name: str) -> bool:
        return any(name in b.names for b in self.blocks)

    def declare(self, name: str) -> None:
        self.blocks[-1].names.add(name)

    def top_level(self) -> bool:
        return not any(b.kind == "function" for b in self.blocks)

    def push(self, kind: str, names: set[str] | None = None) -> None:
        self.blocks.append(_Block(kind, set(names or ())))

    def pop(self) -> _Block | None:
        return self.blocks.pop() if len(self.blocks) > 1 else None

    @property
    def brackets(self) -> list[str]:
        return self.blocks[-1].brackets

    # -------------------------------------------------------------- walk
    def walk(self) -> list[LintFinding]:
        i = 0
        while i < len(self.t):
            i = self.step(i)
        for name, line in self.reads.items():
            if name not in self.assigned:
                self.findings.append(LintFinding(line, _unknown_message(name)))
        return sorted(self.findings, key=lambda f: f.line)

    def step(self, i: int) -> int:
        t = self.t[i]
        if t.kind == "symbol":
            return self.symbol(i)
        if t.kind == "keyword":
            return self.keyword(i)
        if t.kind == "name":
            self.name(i)
        return i + 1

    def symbol(self, i: int) -> int:
        text = self.t[i].text
        if text in "({[":
            self.brackets.append(text)
        elif text in ")}]" and self.brackets:
            self.brackets.pop()
        elif text == "::":  # ::label::
            return i + 3
        return i + 1

    def keyword(self, i: int) -> int:
        text = self.t[i].text
        if text == "local":
            return self.local(i + 1)
        if text == "function":
            return self.function(i + 1, local_name=False)
        if text == "for":
            return self.for_header(i + 1)
        if text == "do":
            names, self.pending_loop = self.pending_loop, None
            self.push("do", names)
        elif text in ("if", "repeat"):
            self.push(text)
        elif text in ("elseif", "else"):
            self.pop()
            self.push("if")
        elif text == "until":
            block = self.pop()
            if block is not None:  # the condition still sees the body's locals
                self.blocks[-1].names |= block.names
        elif text == "end":
            self.pop()
        elif text == "goto":
            return i + 2
        return i + 1

    def local(self, i: int) -> int:
        if self.is_(i, "function"):
            if self.is_name(i + 1):
                self.declare(self.t[i + 1].text)
            return self.function(i + 1, local_name=True)
        while self.is_name(i):
            self.declare(self.t[i].text)
            i += 1
            if self.is_(i, "<"):  # <const> / <close>
                i += 3
            if not self.is_(i, ","):
                break
            i += 1
        return i

    def function(self, i: int, *, local_name: bool) -> int:
        params: set[str] = set()
        if self.is_name(i):
            first = self.t[i]
            i += 1
            if local_name:
                pass
            elif self.is_(i, ".") or self.is_(i, ":"):
                self.read(first)
            else:
                self.assign(first)
            while (self.is_(i, ".") or self.is_(i, ":")) and self.is_name(i + 1):
                if self.is_(i, ":"):
                    params.add("self")
                self.near_miss(self.t[i + 1])
                i += 2
        if self.is_(i, "("):
            i += 1
            while i < len(self.t) and not self.is_(i, ")"):
                if self.is_name(i):
                    params.add(self.t[i].text)
                i += 1
            i += 1
        self.push("function", params)
        return i

    def for_header(self, i: int) -> int:
        names: set[str] = set()
        while self.is_name(i):
            names.add(self.t[i].text)
            i += 1
            if not self.is_(i, ","):
                break
            i += 1
        self.pending_loop = names
        return i

    def name(self, i: int) -> None:
        t = self.t[i]
        before = self.tok(i - 1)
        if before is not None and before.kind == "symbol" and before.text in (".", ":"):
            self.library_field(i)
            return
        followed_by_assign = self.is_(i + 1, "=")
        if not followed_by_assign:
            self.top_level_side_effect(i)
        if self.brackets:
            if followed_by_assign and self.brackets[-1] == "{":
                return  # a table constructor's field name
            self.read(t)
            return
        if followed_by_assign or self.targets_list(i):
            if self.declared(t.text):
                return
            self.assign(t)
            return
        self.read(t)

    def targets_list(self, i: int) -> bool:
        """True when the name at ``i`` starts or continues ``a, b, c =``."""
        j = i + 1
        while self.is_(j, ",") and self.is_name(j + 1):
            j += 2
        return j > i + 1 and self.is_(j, "=")

    def library_field(self, i: int) -> None:
        dot = self.t[i - 1]
        owner = self.tok(i - 2)
        if dot.text != "." or owner is None or owner.kind != "name":
            return
        before_owner = self.tok(i - 3)
        if before_owner is not None and before_owner.text in (".", ":"):
            return
        fields = self.libraries.get(owner.text)
        if fields is None or self.declared(owner.text) or owner.text in self.assigned:
            return
        if self.is_(i + 1, "="):
            return
        if self.t[i].text not in fields:
            self.findings.append(
                LintFinding(
                    self.t[i].line,
                    f"'{owner.text}.{self.t[i].text}' is not available in the sandbox",
                )
            )
        elif owner.text == "os":
            self.wall_clock(i)

    def wall_clock(self, i: int) -> None:
        """``os.time()``, ``os.clock()`` or ``os.date(fmt)``: the wall clock in real time.

        In virtual time they read the virtual clock, but a real-time run that
        puts them in a payload, a shared value or a decision cannot be
        replayed exactly (docs/replay.md). With a time argument (``os.time(t)``,
        ``os.date(fmt, t)``) they are pure and stay quiet.
        """
        name = self.t[i].text
        wanted = {"time": 0, "clock": 0, "date": 1}.get(name)
        if wanted is None or not self.is_(i + 1, "("):
            return
        depth, args, j = 0, 0, i + 2
        if not self.is_(j, ")"):
            args = 1
        while (t := self.tok(j)) is not None:
            if t.kind == "symbol" and t.text in ("(", "{", "["):
                depth += 1
            elif t.kind == "symbol" and t.text in (")", "}", "]"):
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and self.is_(j, ","):
                args += 1
            j += 1
        if args <= wanted:
            self.findings.append(LintFinding(
                self.t[i].line,
                f"'os.{name}()' reads the wall clock in a real-time run, so the run cannot "
                "be replayed exactly (moonbus replay); use time() (the tick), or pass the "
                "time as an argument"))

    def near_miss(self, t: Token) -> bool:
        meant = lifecycle_near_miss(t.text)
        if meant is None:
            return False
        self.findings.append(LintFinding(
            t.line, f"'{t.text}' is not a lifecycle function and is never called: "
            f"did you mean {meant}?"))
        return True

    def top_level_side_effect(self, i: int) -> None:
        """A host call, a shared write or events:emit in code that runs in both engines."""
        t = self.t[i]
        if not self.top_level() or self.declared(t.text) or t.line in self.side_effect_lines:
            return
        if not (self.is_(i + 1, ":") or self.is_(i + 1, ".")) or not self.is_name(i + 2):
            return
        what: str | None = None
        if t.text in self.host:
            what = f"host call '{t.text}{self.t[i + 1].text}{self.t[i + 2].text}'"
        elif t.text == "events" and self.t[i + 2].text == "emit":
            what = "events:emit"
        elif t.text == "shared":
            j = i + 1
            while j < len(self.t) and self.t[j].line == t.line:
                if (self.is_(j, ":") and self.is_name(j + 1) and self.t[j + 1].text in SHARED_WRITES
                        and self.is_(j + 2, "(")):
                    what = f"shared write ':{self.t[j + 1].text}'"
                    break
                j += 1
        if what is not None:
            self.side_effect_lines.add(t.line)
            self.findings.append(LintFinding(
                t.line, f"{what} in top-level code runs twice (the chunk loads in both "
                "engines): move it into on_start or a handler"))

    def read(self, t: Token) -> None:
        if self.declared(t.text) or t.text in self.known:
            return
        self.reads.setdefault(t.text, t.line)

    def assign(self, t: Token) -> None:
        if self.declared(t.text):
            return
        first = t.text not in self.assigned
        self.assigned.setdefault(t.text, t.line)
        if t.text in LIFECYCLE_GLOBALS or not first or self.near_miss(t):
            return
        self.findings.append(
            LintFinding(
                t.line,
                f"assignment to global '{t.text}': make it local (each engine has its own "
                "globals; use shared values to share state)",
            )
        )


def _unknown_message(name: str) -> str:
    if name == "require":
        return "'require' is only available in folder scripts (a folder with manifest.json)"
    return f"unknown global '{name}' (not a Lua, moonbus or game global, never assigned)"


def lint_globals(
    source: str,
    known: Collection[str],
    libraries: Mapping[str, Collection[str]] | None = None,
    host_globals: Collection[str] = (),
) -> list[LintFinding]:
    """Warnings about globals in ``source`` (already known to compile), by line.

    ``known`` are the globals a script may read (sandbox, moonbus library,
    game APIs); ``libraries`` maps a standard library name (``os``) to the
    fields the sandbox keeps; ``host_globals`` are the game's API globals,
    whose calls in top-level code are reported.
    """
    walker = _Walker(tokenize(source), frozenset(known), libraries or {}, frozenset(host_globals))
    return walker.walk()


def assigned_globals(source: str) -> set[str]:
    """The globals ``source`` assigns (for scripts whose modules share one environment)."""
    walker = _Walker(tokenize(source), frozenset(), {})
    walker.walk()
    return set(walker.assigned)
