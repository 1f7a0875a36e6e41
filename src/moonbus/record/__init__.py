"""Recording a run (SPEC §12; docs/replay.md): the half of record/replay the runtime composes.

``Runtime(record=FILE)`` builds a ``recorder.Recorder`` (or takes any
``observer.RunObserver``, such as the replayer's checker) and tells it of
every host event, API call and loaded script. ``recording`` is the file
format (one SQLite database; it documents the tables), ``codec`` the JSON
encoding of values and ``proxies`` the stand-ins for game objects. The
replaying half (``moonbus.replay``) drives a whole session and so sits above
the runtime; this package sits below it and knows neither.
"""
