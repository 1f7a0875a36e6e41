"""Review 3 of the host-call room check: a runner batch's job table was built
under the memory limit the previous job left.

``_run_batch`` makes the batch's job table (``engine.table_from``, which lupa
builds with unprotected Lua API calls) before it sets the batch's budget, so
under the previous job's limit: after a job with a ``state`` that filled its
budget (the state keeps it), the next batch's table found no room, and Lua
panicked: the whole process aborted. Run in a subprocess.
"""

from __future__ import annotations

import pytest
from tests.child_process import run_child

BATCH = '''
import sys
from moonbus.runner import Runner
from moonbus.lua.sandbox import SandboxFactory
FILL = """
local rep = string.rep
hold = nil
local s
local function add() hold = {hold, rep("x", s)} end
s = 1 << 16
while s >= 1 do
  if not pcall(add) then s = s // 2 end
end
return 0
"""
TINY = "local a, b = ... return a"
with Runner(workers=1, factory=SandboxFactory(native=sys.argv[1] == "native")) as r:
    for i in range(3):  # learnt as a tiny job: later ones run in batches
        r.submit(TINY, ("w", i)).result(timeout=20)
    for _ in range(4):
        r.submit(FILL, state="st", memory=1 << 20).result(timeout=20)
        futures = [r.submit(TINY, ("hello there %d" % i, i)) for i in range(50)]
        assert [f.result(timeout=20) for f in futures][-1] == "hello there 49"
print("done")
'''


@pytest.mark.parametrize("native", [True, False])
def test_a_batch_after_a_job_that_filled_its_state_does_not_abort(native: bool) -> None:
    done = run_child(BATCH, "native" if native else "python", timeout=60,
                     hung="the runner hung")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "done"
