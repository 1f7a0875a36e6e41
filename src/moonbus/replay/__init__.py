"""Record a run and replay it in virtual time (SPEC §12; docs/replay.md).

* ``Recorder`` (``Runtime(record=FILE)``, ``moonbus run --record FILE``)
  writes one SQLite file: the scripts' sources and options, the app, seed and
  settings, every event with its seq, tick and payload, every host API call
  with its arguments and answer, and the scripts' final shared values, stats
  and status.
* ``replay(FILE)`` (``moonbus replay FILE``) runs the same scripts again in
  virtual time against the recording alone (the game is not needed: host
  events are fed at their ticks and API calls are answered from the file)
  and returns the first divergence, or none.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from moonbus.replay.divergence import Divergence, ReplayDivergenceError, ReplayResult
    from moonbus.replay.recorder import Recorder
    from moonbus.replay.recording import Recording
    from moonbus.replay.replayer import replay

__all__ = ["Divergence", "Recorder", "Recording", "ReplayDivergenceError", "ReplayResult",
           "replay"]

# Imported on first use: moonbus.runtime imports moonbus.replay.observer, and
# the replayer imports the runtime, so this package must not import it eagerly.
_WHERE: Final = MappingProxyType({
    "Divergence": "divergence", "ReplayDivergenceError": "divergence",
    "ReplayResult": "divergence", "Recorder": "recorder", "Recording": "recording",
    "replay": "replayer",
})


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'moonbus.replay' has no attribute {name!r}")
    return getattr(importlib.import_module(f"moonbus.replay.{module}"), name)
