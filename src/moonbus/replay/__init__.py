"""Replay a recorded run in virtual time (SPEC §12; docs/replay.md).

* ``Recorder`` (``Runtime(record=FILE)``, ``moonbus run --record FILE``)
  writes one SQLite file: the scripts' sources and options, the app, seed and
  settings, every event with its seq, tick and payload, every host API call
  with its arguments and answer, and the scripts' final shared values, stats
  and status. It lives below the runtime, in ``moonbus.record`` (the runtime
  composes it); it is re-exported here with ``Recording``.
* ``replay(FILE)`` (``moonbus replay FILE``) runs the same scripts again in
  virtual time against the recording alone (the game is not needed: host
  events are fed at their ticks and API calls are answered from the file)
  and returns the first divergence, or none. It drives a
  ``moonbus.session`` session, so this package sits above the session.
"""

from __future__ import annotations

from moonbus.record.recorder import Recorder
from moonbus.record.recording import Recording
from moonbus.replay.divergence import Divergence, ReplayDivergenceError, ReplayResult
from moonbus.replay.replayer import replay

__all__ = ["Divergence", "Recorder", "Recording", "ReplayDivergenceError", "ReplayResult",
           "replay"]
