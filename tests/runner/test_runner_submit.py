"""Submitting jobs: arguments, results, compiled jobs, callbacks and bad input."""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moonbus.errors import (
    ConfigError,
    JobDataError,
    MoonbusError,
    RunnerError,
    ScriptError,
    ScriptSyntaxError,
)
from moonbus.lua.exposure import lua_api
from moonbus.runner import CompiledJob, JobFuture, Runner


def test_spec_example(runner: Runner) -> None:
    fut = runner.submit("return 1 + ...", args=(41,), timeout=1.0)
    assert isinstance(fut, Future)
    assert fut.result(timeout=5) == 42


def test_results_none_one_many(runner: Runner) -> None:
    assert runner.submit("return").result(timeout=5) is None
    assert runner.submit("local x = 1").result(timeout=5) is None
    assert runner.submit("return 'a'").result(timeout=5) == "a"
    assert runner.submit("return 1, 'two', true, nil").result(timeout=5) == (1, "two", True, None)


def test_args_arrive_as_varargs(runner: Runner) -> None:
    source = "local a, b, c = ... return select('#', ...), a, b.k[2], c"
    result = runner.submit(source, args=(1.5, {"k": [10, 20]}, "x")).result(timeout=5)
    assert result == (3, 1.5, 20, "x")


def test_tables_come_back_as_lists_and_dicts(runner: Runner) -> None:
    result = runner.submit("return {1, 2, 3}, {a = {b = 'c'}}, {}").result(timeout=5)
    assert result == ([1, 2, 3], {"a": {"b": "c"}}, {})


def test_lists_and_tuples_both_accepted(runner: Runner) -> None:
    assert runner.submit("return ...", args=[1, 2]).result(timeout=5) == (1, 2)


_scalar = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
)
_plain = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, min_size=1, max_size=4)
    | st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), max_size=5),
                      inner, min_size=1, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def shared_runner() -> Any:
    made = Runner(workers=2)
    yield made
    made.close()


@settings(max_examples=60, deadline=None)
@given(value=_plain)
def test_plain_values_round_trip(shared_runner: Runner, value: Any) -> None:
    assert shared_runner.submit("return ...", args=(value,)).result(timeout=5) == value


def test_compiled_job_is_checked_once_and_reused(runner: Runner) -> None:
    job = runner.compile("return (...) * 2", name="double")
    assert isinstance(job, CompiledJob)
    assert job.name == "double"
    assert [runner.submit(job, args=(i,)).result(timeout=5) for i in range(5)] == [0, 2, 4, 6, 8]
    assert runner.compile("return (...) * 2", name="double") is job


def test_compile_syntax_error_names_chunk_and_line(runner: Runner) -> None:
    with pytest.raises(ScriptSyntaxError) as info:
        runner.compile("local x = 1\nreturn x +", name="ai")
    assert info.value.where == "ai:2"
    assert "ai:2:" in str(info.value)


def test_submit_syntax_error_fails_future_at_once(runner: Runner) -> None:
    fut = runner.submit("return 1 +")
    assert fut.done()  # no worker involved
    error = fut.exception()
    assert isinstance(error, ScriptSyntaxError)
    assert isinstance(error, ScriptError)
    assert error.where == "job:1"
    assert "near <eof>" in error.message


def test_runtime_error_carries_message_line_and_traceback(runner: Runner) -> None:
    fut = runner.submit("local t = nil\n\nreturn t.x")
    error = fut.exception(timeout=5)
    assert type(error) is ScriptError
    assert error.where == "job:3"
    assert "attempt to index" in error.message
    assert "stack traceback" in error.lua_traceback


def test_error_with_table_value(runner: Runner) -> None:
    error = runner.submit("error({code = 7})").exception(timeout=5)
    assert isinstance(error, ScriptError)


def test_hand_made_compiled_job_cannot_escape_its_wrapper(runner1: Runner) -> None:
    # Valid only once wrapped: it would close the wrapper and keep state between jobs.
    evil = CompiledJob.of(
        "end local seen = 0 return function(_ENV, ...) seen = seen + 1 return seen end --",
        "evil",
    )
    error = runner1.submit(evil).exception(timeout=5)
    assert isinstance(error, ScriptSyntaxError)
    assert runner1.submit("return 1 + ...", args=(1,)).result(timeout=5) == 2


def test_source_ending_in_a_comment(runner: Runner) -> None:
    assert runner.submit("return 5 -- the answer").result(timeout=5) == 5


def test_callback_runs_once_with_the_future(runner: Runner) -> None:
    seen: list[Future[Any]] = []
    done = threading.Event()

    def callback(fut: Future[Any]) -> None:
        seen.append(fut)
        done.set()

    fut = runner.submit("return 3", callback=callback)
    assert done.wait(5)
    assert seen == [fut]
    assert fut.result() == 3


def test_callback_for_a_job_that_fails_at_submit(runner: Runner) -> None:
    seen: list[Future[Any]] = []
    fut = runner.submit("return +", callback=seen.append)
    assert seen == [fut]


# ---------------------------------------------------------------- bad arguments
@lua_api
class _Player:
    def name(self) -> str:
        return "p"


def _cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((print,), "args[0]: a Python builtin_function_or_method"),
        ((lambda: 1,), "args[0]: a Python function"),
        (({"pos": [1, object()]},), "args[0]['pos'][1]: a Python object"),
        ((_Player(),), "args[0]: a Python _Player"),
        ((_cyclic(),), "args[0]['self']: cyclic"),
        ((2**63,), "does not fit"),
        (({2**64: 1},), "does not fit"),
        (({math.nan: 1},), "NaN"),
        (({(1, 2): 1},), "table key of type tuple"),
        ((b"bytes",), "a Python bytes"),
        ("abc", "args must be a tuple or list"),
        ({"a": 1}, "args must be a tuple or list"),
    ],
)
def test_bad_args_fail_the_future_with_a_clear_error(
    runner: Runner, args: Any, fragment: str
) -> None:
    fut = runner.submit("return ...", args=args)
    assert fut.done()
    error = fut.exception()
    assert isinstance(error, JobDataError)
    assert isinstance(error, TypeError)
    assert isinstance(error, RunnerError)
    assert fragment in str(error)


def test_too_deep_args(runner: Runner) -> None:
    value: Any = 1
    for _ in range(100):
        value = [value]
    error = runner.submit("return ...", args=(value,)).exception()
    assert isinstance(error, JobDataError)
    assert "nested deeper" in str(error)


@pytest.mark.parametrize(
    "source", ['return "\\255"', 'return {"\\254"}', 'return "ok", {k = "\\255"}']
)
def test_a_result_that_is_not_utf8_text_is_a_clear_error(runner1: Runner, source: str) -> None:
    error = runner1.submit(source).exception(timeout=5)
    assert isinstance(error, JobDataError)
    assert "not valid UTF-8" in str(error)
    assert runner1.submit("return 1 + ...", args=(1,)).result(timeout=5) == 2


def test_args_with_invalid_unicode(runner1: Runner) -> None:
    error = runner1.submit("return ...", args=("a\udc80",)).exception(timeout=5)
    assert isinstance(error, JobDataError)
    assert "not valid Unicode" in str(error)
    assert runner1.submit("return ...", args=("ok",)).result(timeout=5) == "ok"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("return function() end", "result #1 is not plain data"),
        ("return 1, math.floor", "result #2 is not plain data"),
        ("return {f = function() end}", "result #1 is not plain data"),
        ("return coroutine.create(function() end)", "result #1 is not plain data"),
        ("local t = {} t.t = t return t", "cyclic"),
        ("return _G", "result #1 is not plain data"),
    ],
)
def test_bad_results_fail_the_future(runner: Runner, source: str, fragment: str) -> None:
    error = runner.submit(source).exception(timeout=5)
    assert isinstance(error, JobDataError)
    assert fragment in str(error)


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": math.inf},
        {"timeout": "1"},
        {"memory": 0},
        {"memory": 1.5},
        {"state": ""},
        {"state": 3},
        {"acquire_timeout": -1},
        {"acquire_timeout": "1"},
        {"acquire_timeout": math.nan},
        {"apply": 5},
    ],
)
def test_bad_options_raise_config_error(runner: Runner, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        runner.submit("return 1", **options)


def test_source_must_be_text(runner: Runner) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        runner.submit(b"return 1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"workers": 0},
        {"workers": 1.5},
        {"queue_size": 0},
        {"acquire_timeout": -1},
        {"acquire_timeout": True},
        {"default_timeout": 0},
        {"default_memory": 0},
        {"chunk_cache_size": 0},
        {"latency_window": 0},
    ],
)
def test_bad_runner_options(options: dict[str, Any]) -> None:
    options = {"workers": 1, **options}
    with pytest.raises(ConfigError):
        Runner(**options)


def test_returned_future_type(runner: Runner) -> None:
    fut = runner.submit("return 1")
    assert isinstance(fut, JobFuture)
    fut.result(timeout=5)


def test_errors_are_moonbus_errors(runner: Runner) -> None:
    assert isinstance(runner.submit("error('x')").exception(timeout=5), MoonbusError)


def test_chunk_cache_eviction_keeps_jobs_correct(factory: Any) -> None:
    with Runner(workers=1, factory=factory, chunk_cache_size=2) as small:
        sources = [f"return {i} + ..." for i in range(5)]
        for _ in range(2):
            results = [small.submit(src, args=(100,)).result(timeout=5) for src in sources]
            assert results == [100, 101, 102, 103, 104]
