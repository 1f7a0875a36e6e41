"""``moonbus bench``: run the benchmark suites and print one table.

Every suite is a module of ``moonbus.bench`` with ``run(quick) -> list[BenchRow]``;
each row is measured side by side with its peer in the same process and run and
reported as a ratio (> 1 means moonbus is better). ``--json FILE`` keeps the
raw rows for comparing runs. A row that could not be measured (a peer that is
not installed, no Redis to reach) reads "skipped" and its reason is printed
under the table; the other rows still run.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import pkgutil
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

import moonbus.bench
from moonbus.bench.harness import MISSED, BenchRow

__all__ = ["bench_command", "suite_names"]

_NOT_SUITES = {"harness"}


def suite_names() -> list[str]:
    """Benchmark suites shipped in ``moonbus.bench``, sorted."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(moonbus.bench.__path__)
        if info.name not in _NOT_SUITES and not info.name.startswith("_")
    )


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _table(rows: list[BenchRow]) -> Table:
    table = Table(title="moonbus bench", show_lines=False)
    for col in ("area", "row", "moonbus", "unit", "peer", "peer value", "ratio", "target", "ok"):
        table.add_column(col, overflow="fold")
    for r in rows:
        ok = "skipped" if r.skipped else "-" if r.ok is None else ("yes" if r.ok else "NO")
        table.add_row(r.area, r.name, _fmt(r.value), r.unit, r.peer or "-", _fmt(r.peer_value),
                      "-" if r.ratio is None else f"{r.ratio:.2f}x", r.target, ok)
    return table


def _skip_reasons(rows: list[BenchRow]) -> dict[str, int]:
    """Reason -> how many rows it skipped, in table order."""
    reasons: dict[str, int] = {}
    for r in rows:
        if r.skipped:
            reasons[r.skipped] = reasons.get(r.skipped, 0) + 1
    return reasons


@click.command("bench")
@click.option("--quick", is_flag=True, help="Small workloads (seconds, for a smoke test).")
@click.option("--only", "only", multiple=True, metavar="SUITE",
              help="Run only this suite (repeatable).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the rows as JSON.")
def bench_command(quick: bool, only: tuple[str, ...], json_path: Path | None) -> None:
    """Run the benchmark suites: each row against its peer, in the same run."""
    names = suite_names()
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise click.UsageError(f"unknown suite(s) {', '.join(unknown)}; have {', '.join(names)}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a file or pipe: keep one row per line
    rows: list[BenchRow] = []
    for name in (n for n in names if not only or n in only):
        console.print(f"[dim]running {name}...[/dim]")
        module = importlib.import_module(f"moonbus.bench.{name}")
        gc.collect()  # one suite's garbage must not be collected in the next one's timings
        rows.extend(module.run(quick))
    console.print(_table(rows))
    for reason, count in _skip_reasons(rows).items():
        console.print(f"{count} row{'s' if count > 1 else ''} skipped: {reason}", highlight=False)
    for r in rows:
        if r.note.startswith(MISSED):
            console.print(f"{r.area} / {r.name}: {r.note}", highlight=False)
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(r) for r in rows], indent=2), encoding="utf-8")
