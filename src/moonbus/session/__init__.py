"""One game session: an app's world, one runtime and the planned scripts, run tick by tick.

``session.Session`` is the run loop that ``moonbus run``/``serve``/``watch``,
the replayer (``moonbus.replay``), the replay bench and the test kit's
``moonbus_sim`` drive; ``plan.plan_scripts`` turns ``SCRIPT... --option ...``
into checked ``ScriptPlan`` values (``script_options`` parses the options).
It sits above the runtime (it builds one) and below everything that drives
it, so none of those reaches into the command line.
"""
