"""The package layering and the module sizes of ``src/moonbus`` are checked, not hoped for.

What is checked (docs/architecture.md draws the same layers):

* **Layers.** Every package of ``moonbus`` (a subpackage such as ``bus``, or a
  top-level module such as ``runtime``; ``moonbus`` itself is the re-export
  facade ``__init__.py``) sits in one tier of ``LAYERS``. A module may import
  only from packages in *lower* tiers (and from its own package). Packages in
  the *same* tier are independent of each other: the sandbox (``lua``) does
  not know what an event is, the event store does not lean on the shared
  store. An import that breaks this is a *back edge*; the test names the
  importing module, the imported one and the rule. Today's back edges are in
  ``KNOWN_BACK_EDGES``, each with why it remains; the list only shrinks (an
  entry that no longer matches an import fails too, so it is removed when
  fixed).
* **No cycles between packages.** The strongly connected components of the
  package import graph (every import, allowlisted or not) are single packages,
  but for the ones in ``KNOWN_CYCLES`` (made by known back edges; shrinks only).
* **Module size.** A module (``.py``, ``.pyi``, ``.lua``; C sources are not
  counted) has at most ``MAX_MODULE_LINES`` lines (DESIGN.md rule 7). Today's
  larger ones are in ``OVERSIZE`` with their line count, which must not grow.

What counts as an import: every ``import``/``from ... import`` in a module's
syntax tree, also inside functions (a deferred import is still a dependency),
relative imports resolved. Imports under ``if TYPE_CHECKING:`` are *not* part
of the layering, because they never run and so never order imports or make
a cycle: they name the type of a collaborator that a higher layer hands in
(the bus is given an ``EventStore``; admin commands are given the
``Runtime``). They are still listed, in ``TYPE_ONLY_UP``, when they point up
or sideways, so a new one is a decision, not an accident. Imports made by
``importlib`` (``--app MODULE:ATTR``, lupa's Lua flavours) are not seen.

Pure file reading (no moonbus import); runs in well under a second.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "moonbus"

# Bottom first. A package may import from lower tiers only; packages in one tier
# are independent of each other. Keep in step with docs/architecture.md.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),  # the error tree: everything raises from here
    ("native",),  # which C fast paths are switched off (environment), nothing else
    ("redisio",),  # the Redis client layer (connection, retry, batching, scripts)
    ("bus", "lua"),  # the event kernel | the Lua sandbox: neither knows the other
    ("shared", "store"),  # SharedStore | EventStore (knows Event): two storage layers
    ("host", "runner", "api_check"),  # long-lived scripts | runner jobs | host-API checks
    ("admin", "app"),  # command registry + RCON | the host application's interface
    ("record", "http"),  # recording a run | the HTTP management API (issue 14); the
    # runtime composes the recorder and imports http lazily (Runtime.serve_http)
    ("runtime",),  # the composition root
    ("world", "moonbus", "session"),  # the demo game | the facade | one game session's run loop
    ("replay",),  # replaying a recording: drives a session
    ("bench",),  # benchmarks, driven by the CLI
    ("cli",),  # the command line
    ("testing", "__main__"),  # the pytest plugin (drives a session, replays) | python -m
)

# (importing module, imported module) -> why this back edge remains. Shrinks only.
KNOWN_BACK_EDGES: dict[tuple[str, str], str] = {}

# Type-only imports (under ``if TYPE_CHECKING:``) that point up or sideways:
# the annotated object is handed in by the layer above.
TYPE_ONLY_UP: dict[tuple[str, str], str] = {
    ("moonbus.bus.bus", "moonbus.store.base"): "the runtime hands the bus its EventStore",
    ("moonbus.admin.commands", "moonbus.runtime"): "commands are built over the Runtime",
    ("moonbus.admin.eval_cmd", "moonbus.runtime"): "script.eval is built over the Runtime",
    ("moonbus.record.observer", "moonbus.runtime"): "the runtime hands the recorder itself",
    ("moonbus.record.recorder", "moonbus.runtime"): "the runtime hands the recorder itself",
    ("moonbus.http.api", "moonbus.runtime"): "the endpoints are built over the Runtime",
    ("moonbus.http.app", "moonbus.runtime"): "the app is built over the Runtime",
    ("moonbus.http.server", "moonbus.runtime"): "the runtime hands its HTTP server itself",
    ("moonbus.http.streams", "moonbus.runtime"): "the streams serve the Runtime they are given",
    ("moonbus.http.metrics", "moonbus.runtime"): "/metrics reads the Runtime it is given",
}

# Package cycles today, each made by back edges listed above; shrinks only.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()

MAX_MODULE_LINES = 500
# Module path under src/moonbus -> its line count today (a ceiling: must not grow;
# split the module to get it off this list).
OVERSIZE: dict[str, int] = {}


@dataclass(frozen=True)
class Import:
    """One import of a moonbus module by a moonbus module."""

    importer: str
    imported: str
    line: int
    type_only: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def package_of(module: str) -> str:
    """``moonbus.bus.event`` -> ``bus``; ``moonbus.runtime`` -> ``runtime``;
    ``moonbus`` -> ``moonbus`` (the facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text("utf-8"), str(path))
    is_package = path.name == "__init__.py"

    def targets(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
            return
        base = node.module or ""
        if node.level:
            here = module.split(".") if is_package else module.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join([*here, *([node.module] if node.module else [])])
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield sub if sub in known else base

    def walk(nodes: list[ast.stmt], type_only: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, True)
                yield from walk(node.orelse, type_only)
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in targets(node):
                    if target == "moonbus" or target.startswith("moonbus."):
                        yield Import(module, target, node.lineno, type_only)
                continue
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    stmts = [c for c in children if isinstance(c, ast.stmt)]
                    # except handlers and match cases hold statements one level down
                    for c in children:
                        if isinstance(c, ast.ExceptHandler | ast.match_case):
                            stmts.extend(c.body)
                    yield from walk(stmts, type_only)

    yield from walk(tree.body, False)


@cache
def all_imports() -> tuple[Import, ...]:
    """Every moonbus -> moonbus import in src/moonbus (type-only ones flagged)."""
    known = _modules()
    found = (imp for name, path in known.items() for imp in _imports_of(name, path, known))
    return tuple(dict.fromkeys(found))  # ``from m import a, b`` is one import of m


def _tier() -> dict[str, int]:
    return {pkg: i for i, tier in enumerate(LAYERS) for pkg in tier}


def _violation(imp: Import, tiers: dict[str, int]) -> str | None:
    """Why ``imp`` breaks the layering, or None."""
    a, b = package_of(imp.importer), package_of(imp.imported)
    if a == b:
        return None
    ta, tb = tiers[a], tiers[b]
    if tb < ta:
        return None
    where = "in the same tier as" if ta == tb else "above"
    rule = (
        "packages in one tier are independent" if ta == tb
        else "a package imports only from lower tiers"
    )
    return (
        f"{imp.importer} (line {imp.line}) imports {imp.imported}: package {b!r} "
        f"(tier {tb}) is {where} {a!r} (tier {ta}); rule: {rule} (LAYERS in "
        "tests/test_architecture.py, docs/architecture.md): have the layer above pass "
        "the value in, or move the shared piece down"
    )


def test_every_package_has_a_layer() -> None:
    tiers = _tier()
    missing = sorted({package_of(m) for m in _modules()} - set(tiers))
    assert not missing, (
        f"packages without a layer: {missing}; add each to LAYERS in "
        "tests/test_architecture.py and to docs/architecture.md"
    )


def test_no_new_back_edges() -> None:
    tiers = _tier()
    found = [
        (imp, why) for imp in all_imports() if not imp.type_only
        for why in [_violation(imp, tiers)] if why is not None
    ]
    new = [why for imp, why in found if (imp.importer, imp.imported) not in KNOWN_BACK_EDGES]
    assert not new, "new back edges:\n" + "\n".join(new)
    stale = set(KNOWN_BACK_EDGES) - {(imp.importer, imp.imported) for imp, _ in found}
    assert not stale, (
        f"KNOWN_BACK_EDGES entries that no longer occur (remove them): {sorted(stale)}"
    )


def test_type_only_imports_up_are_listed() -> None:
    tiers = _tier()
    found = {
        (imp.importer, imp.imported): why for imp in all_imports() if imp.type_only
        for why in [_violation(imp, tiers)] if why is not None
    }
    new = [why for key, why in found.items() if key not in TYPE_ONLY_UP]
    assert not new, (
        "new type-only imports up or sideways (add to TYPE_ONLY_UP with why, or "
        "pass a Protocol of the lower layer):\n" + "\n".join(new)
    )
    stale = set(TYPE_ONLY_UP) - set(found)
    assert not stale, f"TYPE_ONLY_UP entries that no longer occur (remove them): {sorted(stale)}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def package_graph() -> dict[str, set[str]]:
    """Package -> packages it imports (runtime imports only)."""
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        a, b = package_of(imp.importer), package_of(imp.imported)
        graph.setdefault(a, set())
        graph.setdefault(b, set())
        if a != b and not imp.type_only:
            graph[a].add(b)
    return graph


def test_no_cycle_between_packages() -> None:
    found = [c for c in strongly_connected(package_graph()) if len(c) > 1]
    stale = set(KNOWN_CYCLES) - {frozenset(c) for c in found}
    assert not stale, f"KNOWN_CYCLES entries that no longer occur (remove them): {stale}"
    cycles = [c for c in found if frozenset(c) not in KNOWN_CYCLES]
    if cycles:
        edges = []
        for imp in all_imports():
            a, b = package_of(imp.importer), package_of(imp.imported)
            if not imp.type_only and a != b and any(a in c and b in c for c in cycles):
                edges.append(f"  {imp.importer}:{imp.line} -> {imp.imported}")
        pytest.fail(f"packages that import each other in a cycle: {cycles}\n" + "\n".join(edges))


def test_strongly_connected_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(map(sorted, strongly_connected(graph))) == [["a", "b", "c"], ["d"]]


def test_the_walk_sees_deferred_and_type_only_imports() -> None:
    imports = {(i.importer, i.imported): i.type_only for i in all_imports()}
    # inside a function body (cli.diagnosis reads the version lazily)
    assert imports[("moonbus.cli.diagnosis", "moonbus")] is False
    assert imports[("moonbus.bus.bus", "moonbus.store.base")] is True


def _module_files() -> Iterator[Path]:
    for pattern in ("*.py", "*.pyi", "*.lua"):
        yield from PACKAGE.rglob(pattern)


def test_modules_stay_small() -> None:
    problems = []
    sizes = {}
    for path in sorted(_module_files()):
        name = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text("utf-8").splitlines())
        sizes[name] = lines
        ceiling = OVERSIZE.get(name)
        if ceiling is None and lines > MAX_MODULE_LINES:
            problems.append(
                f"{name} has {lines} lines (max {MAX_MODULE_LINES}, DESIGN.md rule 7): "
                "split it by idea"
            )
        elif ceiling is not None and lines > ceiling:
            problems.append(
                f"{name} grew to {lines} lines (OVERSIZE ceiling {ceiling}, max "
                f"{MAX_MODULE_LINES}): split it instead of growing it"
            )
    stale = [name for name in OVERSIZE if sizes.get(name, 0) <= MAX_MODULE_LINES]
    assert not problems, "\n".join(problems)
    assert not stale, f"OVERSIZE entries now within {MAX_MODULE_LINES} lines (remove them): {stale}"
