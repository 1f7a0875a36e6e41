"""Runner jobs read the shared store: ``Runner(shared=...)`` + ``submit(namespace=...)``."""

from __future__ import annotations

import pytest

from moonbus.errors import ConfigError, ScriptError
from moonbus.runner import Runner
from moonbus.shared import SharedStore


@pytest.fixture
def store() -> SharedStore:
    s = SharedStore()
    ns = s.namespace("mining")
    ns.int("ore").set(7)
    ns.float("price").set(1.5)
    ns.string("boss").set("ann")
    ns.bool("open").set(True)
    ns.table("prices").set("iron", 3)
    ns.table("route").set("1", "mine")
    ns.table("route").set("2", "bank")
    return s


def test_a_job_reads_with_the_scripts_api(store):
    with Runner(workers=1, shared=store) as runner:
        fut = runner.submit(
            """
            return shared:int("ore"):get() + shared.int("ore"):get(),
                   shared:float("price"):get(), shared:string("boss"):get(),
                   shared:bool("open"):get(), shared:table("prices"):get("iron"),
                   shared:table("prices"):contains("gold"), shared:contains("ore"),
                   shared:contains("nothing")
            """, namespace="mining")
        assert fut.result(10) == (14, 1.5, "ann", True, 3, False, True, False)
        both = runner.submit('return shared:table("prices"):keys(), '
                             'shared:table("route"):to_table()', namespace="mining")
        assert both.result(10) == (["iron"], ["mine", "bank"])


def test_each_read_sees_the_latest_committed_value(store):
    with Runner(workers=1, shared=store) as runner:
        job = runner.compile('return shared:int("ore"):get()')
        assert runner.submit(job, namespace="mining").result(10) == 7
        store.namespace("mining").int("ore").set(8)
        assert runner.submit(job, namespace="mining").result(10) == 8


@pytest.mark.parametrize("code", [
    'shared:int("ore"):set(1)', 'shared:int("ore"):increment()', 'shared:remove("ore")',
    'shared:clear()', 'shared.x = 1', 'shared:table("prices"):set("a", 1)',
    'shared:table("prices"):clear()', 'shared:string("boss"):append("!")',
    'local h = shared:int("ore"); h.get = nil',
])
def test_every_write_is_an_error_and_changes_nothing(store, code):
    with Runner(workers=1, shared=store) as runner:
        fut = runner.submit(code, namespace="mining")
        with pytest.raises(ScriptError, match="shared is read-only in runner jobs"):
            fut.result(10)
        ok = runner.submit('return shared:int("ore"):get()', namespace="mining")
        assert ok.result(10) == 7  # the worker serves the next job normally
    ns = store.namespace("mining")
    assert ns.int("ore").get() == 7 and ns.table("prices").to_table() == {"iron": 3}


def test_jobs_without_a_namespace_have_no_shared(store):
    with Runner(workers=1, shared=store) as runner:
        assert runner.submit("return shared == nil").result(10) is True
        runner.submit("return 1", namespace="mining").result(10)
        assert runner.submit("return shared == nil").result(10) is True


def test_a_namespace_needs_a_store_and_other_kinds_fail_the_job(store):
    with Runner(workers=1) as runner, pytest.raises(ConfigError, match="Runner\\(shared=store\\)"):
        runner.submit("return 1", namespace="mining")
    with Runner(workers=1, shared=store) as runner:
        fut = runner.submit('return shared:int("boss"):get()', namespace="mining")
        with pytest.raises(ScriptError, match="holds a string, not an int"):
            fut.result(10)


def test_many_namespaces_keep_a_bounded_view_cache(store):
    from moonbus.runner.shared_view import MAX_VIEWS

    with Runner(workers=1, shared=store) as runner:
        for i in range(MAX_VIEWS + 10):
            store.namespace(f"n{i}").int("v").set(i)
            assert runner.submit('return shared:int("v"):get()', namespace=f"n{i}").result(10) == i
        views = runner._workers[0]._views
        assert views is not None and len(views._views) == MAX_VIEWS
