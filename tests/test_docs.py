"""Every code block of the README and the docs runs, so no example can rot.

How each fenced block is checked (the language after the fence decides):

* ``python``: run as a program in a fresh interpreter, in a temporary folder
  holding a copy of ``examples/``; it must exit 0 (its own ``assert``\\ s are
  the checks).
  A block whose first line is ``# test_NAME.py`` is a pytest file (the test
  kit's examples, docs/testing.md): it is written under that name there and
  run with ``pytest -p moonbus.testing``; every test in it must pass.
* ``lua``: run as a script with ``moonbus run --ticks 30 --tick-ms 0`` against
  the demo world (or the app named by a first line ``-- app: MODULE:ATTR``);
  it must compile, start and not fail.
* ``sh``/``bash``/``console``: every ``moonbus ...`` line runs in one
  temporary folder per block (so a file one line writes is there for the
  next) when it ends by itself (virtual-time runs, ``check``, ``events``, ``replay``,
  offline ``admin``, ``--version``, ``doctor``, ``stubs``) and uses no shared
  server; other lines (real-time runs, ``serve``, RCON, Redis URLs) are
  parsed by the real command line, so a renamed command or option fails.
  Lines that do not start with ``moonbus`` (``pip``, ``export``, ``kill``) are
  not run.
* ``text`` and blocks without a language are output and diagrams: not code.

A block preceded by ``<!-- docs-test: skip REASON -->`` is not run; the
reason is required and the number of such blocks is capped below.
The MkDocs site itself is built in strict mode (broken links, missing pages
and bad references fail).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from moonbus.cli import cli as cli_main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"<!-- docs-test: skip (.+?) -->")
TEST_FILE = re.compile(r"#\s*(test_\w+\.py)\s*\n")
SHELL = {"sh", "bash", "console", "shell"}
PROSE = {"text", ""}
MAX_SKIPPED = 3


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}:{self.lang or 'text'}"


def _blocks(page: Path) -> list[Block]:
    out: list[Block] = []
    lines = page.read_text("utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        before = lines[start - 1] if start > 0 else ""
        skip = SKIP.search(before)
        out.append(Block(page, start + 1, lang, "\n".join(body) + "\n",
                         skip.group(1) if skip else None))
        i += 1
    return out


ALL = [b for page in PAGES for b in _blocks(page)]
CODE = [b for b in ALL if b.lang not in PROSE]


def _workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MOONBUS_RCON_PASSWORD"] = "docs-test"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return env


def _run(args: list[str], cwd: Path, block: Block, timeout: float = 120) -> None:
    done = subprocess.run(args, cwd=cwd, env=_env(cwd), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (
        f"{block.id}: {' '.join(args)[:200]} exited {done.returncode}\n"
        f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )


def _commands(code: str) -> list[str]:
    """Shell lines joined across ``\\`` continuations, comments dropped."""
    joined = code.replace("\\\n", " ")
    out = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        line = line[:-1].strip() if line.endswith("&") else line
        out += [part.strip() for part in line.split("&&") if part.strip()]
    return out


def _glob(arg: str, cwd: Path) -> list[str]:
    """A shell would expand ``examples/*.lua``; so do we (relative to the block's folder)."""
    if "*" not in arg:
        return [arg]
    return sorted(str(p.relative_to(cwd)) for p in cwd.glob(arg)) or [arg]


def _runs_by_itself(args: list[str]) -> bool:
    if any("redis://" in a for a in args):
        return False  # a shared server: parsed only (the Redis tests cover it)
    command = args[1] if len(args) > 1 else ""
    if command == "run":
        return "--tick-ms" in args and "--ticks" in args and \
            args[args.index("--tick-ms") + 1] == "0"
    if command == "admin":
        return "--host" not in args and "--events-db" in args
    return command in {"check", "events", "--version", "doctor", "stubs", "replay"}


def _parse_only(args: list[str]) -> None:
    """Resolve the subcommand and parse its arguments with the real CLI."""
    assert isinstance(cli_main, click.Group)
    name = args[1]
    with click.Context(cli_main, info_name="moonbus") as ctx:
        cmd = cli_main.get_command(ctx, name)
        assert cmd is not None, f"no moonbus command {name!r}"
        cmd.make_context(name, args[2:], parent=ctx)


@pytest.mark.slow
@pytest.mark.parametrize("block", CODE, ids=[b.id for b in CODE])
def test_code_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    cwd = _workdir(tmp_path)
    if block.lang == "python":
        test_file = TEST_FILE.match(block.code)
        if test_file:
            (cwd / test_file.group(1)).write_text(block.code, "utf-8")
            _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "-p", "moonbus.testing", test_file.group(1)], cwd, block)
        else:
            _run([sys.executable, "-c", block.code], cwd, block)
    elif block.lang == "lua":
        first = block.code.splitlines()[0] if block.code.strip() else ""
        app = first.split("-- app:", 1)[1].strip() if first.startswith("-- app:") else None
        script = cwd / "block.lua"
        script.write_text(block.code, "utf-8")
        args = ["run", str(script), "--ticks", "30", "--tick-ms", "0", "-q"]
        if app:
            args += ["--app", app]
        _run([sys.executable, "-m", "moonbus", *args], cwd, block)
    elif block.lang in SHELL:
        for line in _commands(block.code):
            args = [x for a in shlex.split(line) for x in _glob(a, cwd)]
            if not args or args[0] != "moonbus":
                continue
            if _runs_by_itself(args):
                _run([sys.executable, "-m", "moonbus", *args[1:]], cwd, block)
            else:
                _parse_only(args)
    else:
        pytest.fail(f"{block.id}: unknown code block language {block.lang!r}")


def test_few_blocks_are_skipped() -> None:
    skipped = [b.id for b in CODE if b.skip]
    assert len(skipped) <= MAX_SKIPPED, skipped


@pytest.mark.slow
def test_docs_site_builds_in_strict_mode(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    page = (tmp_path / "site" / "scripting" / "index.html").read_text("utf-8")
    assert "events:on(name, fn)" in page  # the generated reference is in the page
