"""The supported lupa is checked when a SandboxFactory is made: a lupa whose
module does not export what the time limits call is refused with a clear
ConfigError, not a crash at the first time limit."""

from __future__ import annotations

import ctypes

import pytest

from moonbus.errors import ConfigError
from moonbus.lua import lupa_support
from moonbus.lua.sandbox import SandboxFactory


def test_a_lupa_without_the_hook_symbols_is_refused_at_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_cdll = ctypes.CDLL

    class WithoutGethook:
        """lupa's module as ctypes sees it, minus ``lua_gethook``."""

        def __init__(self, path: str) -> None:
            self._lib = real_cdll(path)

        def __getattr__(self, name: str) -> object:
            if name == "lua_gethook":
                raise AttributeError(name)
            return getattr(self._lib, name)

    monkeypatch.setattr(lupa_support.ctypes, "CDLL", WithoutGethook)
    with pytest.raises(ConfigError, match=r"does not export lua_gethook.*lupa>=2\.8,<2\.9"):
        SandboxFactory()
    monkeypatch.undo()
    SandboxFactory().close()
