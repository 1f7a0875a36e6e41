"""The memory backend's C kind check (``moonbus.shared._fastint.KindCheck``,
``MemoryHandle.native_check``): what ``shared:<kind>(name)`` runs in Lua on
every call once the handle is cached. It must agree with asking the store
for the handle again (the Python path): None while the key is absent or
holds that kind, the store's own error otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from moonbus.errors import ClosedError, SharedTypeError
from moonbus.native import load_fast_path
from moonbus.shared import SharedStore

_FAST_INT = load_fast_path("moonbus.shared._fastint", env=False).module
needs_c = pytest.mark.skipif(_FAST_INT is None, reason="the C int operations are not built")

KINDS = ["int", "float", "string", "bool", "table"]
VALUES: dict[str, Any] = {"int": 3, "float": 1.5, "string": "s", "bool": True}


def _checker(store: SharedStore, kind: str) -> Any:
    handle = getattr(store, kind)("k")

    def fallback() -> None:
        getattr(store, kind)("k")  # raises the store's error

    return handle.native_check(fallback)


@needs_c
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("held", [None, *KINDS])
def test_the_check_agrees_with_asking_the_store_again(kind: str, held: str | None) -> None:
    store = SharedStore()
    check = _checker(store, kind)  # taken while the key is free, as Lua caches it
    if held == "table":
        store.table("k").set("a", 1)
    elif held is not None:
        getattr(store, held)("k").set(VALUES[held])
    if held is None or held == kind:
        assert check() is None
        getattr(store, kind)("k")  # the Python path agrees
        return
    with pytest.raises(SharedTypeError, match=f"shared key 'k' holds an? {held}, not an? {kind}"):
        check()
    with pytest.raises(SharedTypeError):
        getattr(store, kind)("k")


@needs_c
def test_a_closed_store_raises_its_closed_error() -> None:
    store = SharedStore()
    check = _checker(store, "int")
    store.close()
    with pytest.raises(ClosedError):
        check()


@needs_c
def test_the_check_takes_no_arguments() -> None:
    check = _checker(SharedStore(), "int")
    with pytest.raises(TypeError, match="takes no arguments"):
        check(1)


def test_without_the_c_path_there_is_no_native_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONBUS_PURE_PYTHON", "1")
    handle = SharedStore().int("k")
    assert handle.native_check(lambda: None) is None  # type: ignore[attr-defined]


@needs_c
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("held", [None, *KINDS])
def test_quick_says_true_or_leaves_it_to_the_full_check(kind: str, held: str | None) -> None:
    """``check.quick()`` (what Lua calls first): True where the check returns
    None, NotImplemented (never the error) where it raises."""
    store = SharedStore()
    check = _checker(store, kind)
    if held == "table":
        store.table("k").set("a", 1)
    elif held is not None:
        getattr(store, held)("k").set(VALUES[held])
    assert check.quick() is (True if held is None or held == kind else NotImplemented)


@needs_c
def test_quick_on_a_closed_store_leaves_it_to_the_full_check() -> None:
    store = SharedStore()
    check = _checker(store, "int")
    assert check.quick() is True
    store.close()
    assert check.quick() is NotImplemented
