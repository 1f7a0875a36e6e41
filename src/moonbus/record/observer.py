"""The four hooks by which a ``Runtime`` lets a recorder (or a replay check) watch a run.

``Runtime(record=...)`` takes a file name (a ``Recorder`` is made) or any
object with these methods. The runtime calls them on its control thread:
``attach`` once at the end of construction (the bus exists, no script yet),
``wrap_api`` for each ``register_api`` (what it returns is registered),
``api_view`` when a script's engine asks for its API globals (what it
returns is what that script gets: each script its own stand-ins, so each
script's calls are recorded and answered in its own order),
``script_loaded`` for each ``load``, ``finish`` from ``close`` once every
script has ended (their final status, shared values and stats are known).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from moonbus.host.script import ScriptHost
    from moonbus.host.source import ScriptSource
    from moonbus.runtime import Runtime

__all__ = ["RunObserver"]


class RunObserver(Protocol):
    """What ``Runtime(record=...)`` calls (see the module docstring)."""

    def attach(self, runtime: Runtime) -> None: ...

    def wrap_api(self, name: str, api: Any) -> Any: ...

    def api_view(self, script: str, apis: Mapping[str, Any]) -> Mapping[str, Any]: ...

    def script_loaded(self, name: str, source: ScriptSource,
                      options: Mapping[str, Any]) -> None: ...

    def finish(self, hosts: Sequence[ScriptHost]) -> None: ...
