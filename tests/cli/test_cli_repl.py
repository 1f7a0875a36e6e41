"""``moonbus repl``: a Lua prompt in a script's sandbox, driven as a user would.

Through a pipe (stdin not a terminal: no prompt, results printed, exit 1 when
a line failed) and through a pseudo-terminal (prompts, continuation lines,
readline history), plus the pure pieces: the ``local`` rewrite and the
evaluator. Every session checks that the prompt cannot reach Python or the
file system and that a runaway loop is cut by the handler time limit, after
which the prompt still answers.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from moonbus.cli.repl_core import Repl
from moonbus.cli.repl_lua import is_incomplete, promote_locals

REPL = [sys.executable, "-m", "moonbus", "repl"]

ESCAPES = """\
return python, io, require, dofile, loadfile, package, debug
return os.execute, os.getenv, os.remove, os.exit
return ("").__class__, players.__class__, players:local_player().__class__
return python.eval("1")
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MOONBUS_REPL_HISTORY"] = str(tmp_path / "history")
    env["TERM"] = "dumb"
    return env


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize(("line", "rewritten"), [
    ("local x = 1", " x = 1"),
    ("local a, b = 1, 2", " a, b = 1, 2"),
    ("local z", " z = nil"),
    ("local p, q", " p, q = nil"),
    ("local function f() local y = 1 return y end", " function f() local y = 1 return y end"),
    ("do local inner = 1 end", "do local inner = 1 end"),
    ("for i = 1, 2 do local k = i end local after = 3",
     "for i = 1, 2 do local k = i end  after = 3"),
    ("if x then local a = 1 elseif y then local b = 2 else local c = 3 end",
     "if x then local a = 1 elseif y then local b = 2 else local c = 3 end"),
    ("repeat local r = 1 until r local s = 2", "repeat local r = 1 until r  s = 2"),
    ("local t <const> = 5", "local t <const> = 5"),
    ('local s = "local x = 1" -- local y = 2', ' s = "local x = 1" -- local y = 2'),
    ("local s = [[\nlocal x]] local w = 1", " s = [[\nlocal x]]  w = 1"),
    ("f = function() local v = 1 end local u = 0", "f = function() local v = 1 end  u = 0"),
])
def test_top_level_locals_become_environment_variables(line: str, rewritten: str) -> None:
    assert promote_locals(line) == rewritten


def test_incomplete_chunks_are_recognised_by_their_eof_error() -> None:
    assert is_incomplete("stdin:1: 'end' expected near <eof>")
    assert not is_incomplete("stdin:1: unexpected symbol near '='")


def test_the_evaluator_keeps_locals_and_prints_lua_style() -> None:
    with Repl() as repl:
        assert repl.feed("local x = 40").output == ""
        assert repl.feed("local function add(a, b) return a + b end").output == ""
        assert repl.feed("add(x, 2)").output == "42"
        assert repl.feed("= x, nil, 'hi'").output == "40\tnil\thi"
        assert repl.feed("{1, 'two', k = {deep = true}}").output == '{1, "two", k = {deep = true}}'
        assert repl.feed("function f()").more
        assert repl.continuing and repl.feed("  return x").more
        assert repl.feed("end").output == "" and not repl.continuing
        assert repl.feed("f()").output == "40"
        assert repl.feed("print('hello')").output == "[info] hello"
        assert repl.feed("x = = 1").error.startswith("stdin:1:")
        assert repl.feed(":tick 3").output == "tick 3"
        assert repl.feed("time()").output == "3"
        assert "tick" in repl.feed(":events 1").output
        assert repl.feed(":nope").error.startswith("unknown command :nope")
        assert repl.feed(":tick -2").error.startswith(":tick takes one positive")
        assert repl.feed(":quit").quit


def test_the_script_limits_hold_at_the_prompt_and_it_answers_after() -> None:
    with Repl() as repl:
        assert "out of memory" in repl.feed('string.rep("x", 2^30)').error
        printed_forever = "setmetatable({}, {__tostring = function() while true do end end})"
        assert "time limit of 100 ms exceeded" in repl.feed(printed_forever).error
        assert "time limit" in repl.feed("function r() return r() end r()").error
        big = repl.feed("t = {} for i = 1, 1e5 do t[i] = i end return t").output
        assert big.endswith("49, 50, ...}")
        assert repl.feed("#t").output == "100000"


def test_handlers_from_the_prompt_hear_events_and_shared_values_are_the_scripts() -> None:
    with Repl() as repl:
        repl.feed('events.on("ping", function(e) logger.info("pong " .. e.n) end)')
        assert repl.feed('events.emit("ping", {n = 7})').output.startswith("[info] pong 7")
        repl.feed('shared:int("seen"):set(5)')
        assert repl.host.shared.int("seen").get() == 5
        repl.feed('events.on("tick", function(e) shared:int("ticks"):increment() end)')
        repl.feed(":tick 4")
        assert repl.feed('shared:int("ticks"):get()').output == "4"


# ------------------------------------------------------------------------ pipe
def test_piped_lines_are_evaluated_without_prompts(tmp_path: Path) -> None:
    lines = "\n".join([
        "x = 20", "local y = 22", "x + y",
        "function twice(n)", "  return n * 2", "end", "twice(y)",
        ESCAPES,
        "while true do end",
        "y - x",
        "return players:local_player():name()",
        ":tick 2", "time()",
    ]) + "\n"
    started = time.monotonic()
    done = subprocess.run(REPL, input=lines, capture_output=True, text=True,
                          env=_env(tmp_path), timeout=60)
    assert time.monotonic() - started < 60
    out = done.stdout.splitlines()
    assert out == [
        "42", "44",
        "\t".join(["nil"] * 7), "\t".join(["nil"] * 4), "nil\tnil\tnil",
        "2", "Moonbus", "tick 2", "2",
    ], done.stdout + done.stderr
    assert ">" not in done.stdout
    errors = done.stderr.splitlines()
    assert errors[0] == "stdin:1: attempt to index a nil value (global 'python')"
    assert "time limit of 100 ms exceeded" in errors[1]
    assert done.returncode == 1  # a line failed
    assert not (tmp_path / "history").exists()  # no history from a pipe


def test_a_clean_piped_session_exits_0_and_an_unfinished_chunk_fails(tmp_path: Path) -> None:
    ok = subprocess.run(REPL, input="1 + 1\n", capture_output=True, text=True,
                        env=_env(tmp_path), timeout=60)
    assert (ok.returncode, ok.stdout) == (0, "2\n"), ok.stderr
    cut = subprocess.run(REPL, input="if true then\n", capture_output=True, text=True,
                         env=_env(tmp_path), timeout=60)
    assert cut.returncode == 1 and "unfinished chunk" in cut.stderr


def test_the_app_option_gives_the_prompt_that_games_globals(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([*REPL, "--app", "examples.grid_game:app"],
                          input="grid:gems_left() > 0\nplayers\n", capture_output=True,
                          text=True, env=_env(tmp_path), cwd=root, timeout=60)
    assert done.stdout.split() == ["true", "nil"], done.stderr
    bad = subprocess.run([*REPL, "--app", "nope:app"], input="", capture_output=True,
                         text=True, env=_env(tmp_path), cwd=tmp_path, timeout=60)
    assert bad.returncode == 2 and "cannot import module 'nope'" in bad.stderr


# -------------------------------------------------------------------- terminal
class _Pty:
    """A child process on a pseudo-terminal: ``expect`` text, ``send`` lines.
    ``pexpect`` when installed, else the same with the standard ``pty`` module."""

    def __init__(self, args: list[str], env: dict[str, str], use_pexpect: bool) -> None:
        self.seen = ""
        self._rest = ""
        self._child: Any = None
        if use_pexpect:
            import pexpect

            self._child = pexpect.spawn(args[0], args[1:], env=env, encoding="utf-8",
                                        timeout=30, dimensions=(40, 200))
            return
        pid, fd = pty.fork()
        if pid == 0:  # the child: never returns
            os.execvpe(args[0], args, env)
        self._pid, self._fd = pid, fd
        self._ended = False

    def expect(self, text: str, timeout: float = 30.0) -> str:
        if self._child is not None:
            self._child.expect_exact(text, timeout=timeout)
            got = str(self._child.before) + text
            self.seen += got
            return got
        deadline = time.monotonic() + timeout
        buffer = self._rest
        while text not in buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not seen; got {buffer!r}"
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self._fd, 4096).decode("utf-8", "replace")
                except OSError:  # EIO: the child closed the terminal
                    chunk = ""
                assert chunk, f"{text!r} not seen before the end; got {buffer!r}"
                buffer += chunk.replace("\r\n", "\n")
        end = buffer.index(text) + len(text)
        got, self._rest = buffer[:end], buffer[end:]  # the rest waits for the next expect
        self.seen += got
        return got

    def send(self, line: str) -> None:
        if self._child is not None:
            self._child.sendline(line)
        else:
            os.write(self._fd, (line + "\n").encode())

    def eof_and_wait(self) -> int:
        if self._child is not None:
            self._child.sendeof()
            import pexpect

            self._child.expect(pexpect.EOF, timeout=30)
            self._child.close()
            return int(self._child.exitstatus)
        os.write(self._fd, b"\x04")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
            if pid:
                os.close(self._fd)
                self._ended = True
                return os.waitstatus_to_exitcode(status)
            with_data, _, _ = select.select([self._fd], [], [], 0.1)
            if with_data:
                with contextlib.suppress(OSError):
                    os.read(self._fd, 4096)
        raise AssertionError("the repl did not end after Ctrl-D")

    def close(self) -> None:
        """End the child if a failed test left it running (by its own pid)."""
        if self._child is not None:
            if self._child.isalive():
                self._child.close(force=True)
            return
        if self._ended:
            return
        self._ended = True
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(self._pid, os.WNOHANG)[0] == 0:
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
        os.close(self._fd)


def _has_pexpect() -> bool:
    try:
        import pexpect  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("driver", [
    pytest.param("pexpect", marks=pytest.mark.skipif(not _has_pexpect(),
                                                     reason="pexpect is not installed")),
    "pty",
])
def test_an_interactive_session_on_a_terminal(tmp_path: Path, driver: str) -> None:
    term = _Pty(REPL, _env(tmp_path), use_pexpect=driver == "pexpect")
    try:
        term.expect("moonbus repl: Lua 5.4")
        term.expect("> ")
        term.send("local answer = 41")
        term.expect("> ")
        term.send("answer + 1")
        assert "42" in term.expect("> ")
        term.send("function greet(name)")
        term.expect(">> ")
        term.send('  return "hi " .. name')
        term.expect(">> ")
        term.send("end")
        term.expect("> ")
        term.send('greet("Ann")')
        assert "hi Ann" in term.expect("> ")
        term.send("os.execute('echo owned')")
        assert "attempt to call a nil value (field 'execute')" in term.expect("> ")
        term.send("while true do end")
        assert "time limit of 100 ms exceeded" in term.expect("> ")
        term.send("answer * 2")
        assert "82" in term.expect("> ")
        term.send(":tick 5")
        assert "tick 5" in term.expect("> ")
        assert term.eof_and_wait() == 0
        assert "answer + 1" in (tmp_path / "history").read_text("utf-8")  # readline history
    finally:
        term.close()
