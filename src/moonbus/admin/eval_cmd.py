"""``script.eval <name> <lua...>``: evaluate Lua inside a running script.

The operator's window into a live script (SPEC §12, tools for script
authors): ``script.eval bot 'return players_seen'`` prints what the script
holds, Lua-style. It is powerful, so:

* **off unless enabled**: ``HostSettings(admin_eval=True)`` (``moonbus serve
  --admin-eval``) turns it on; otherwise the command answers that it is
  disabled and how to enable it. ``settings.set`` cannot turn it on: the
  choice is the operator's, made when the process starts;
* **admin only**: it is an admin command, so only the authenticated admin
  channels reach it (``rt.admin`` in the host process, RCON with its
  password, ``moonbus admin``);
* **inside the sandbox and the time limit**: the chunk runs in the script's
  event engine under the handler time limit and the memory limit, with the
  script's globals only (``ScriptHost.evaluate``, ``moonbus.host.script_eval``);
  ``while true do end`` is cut and the script keeps running;
* **audited**: every evaluation, allowed or refused, is logged at warning
  level on the ``moonbus.admin`` logger and (when it runs) in the script's
  own log, with the script's name and the chunk (cut to ``max_log_line``).

The chunk is the rest of the command's words joined with spaces: quote it as
one argument when it holds quotes of its own (the line is split shell-like:
``script.eval bot 'return "x" .. name'``).

Threads: any (RCON's workers); ``ScriptHost.evaluate`` takes the engine lock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from moonbus.errors import AdminError
from moonbus.host.memory_caps import clip

if TYPE_CHECKING:
    from moonbus.admin.registry import CommandRegistry
    from moonbus.runtime import Runtime

__all__ = ["DISABLED", "register_eval"]

_log = logging.getLogger("moonbus.admin")

DISABLED = ("script.eval is disabled: start the host with HostSettings(admin_eval=True) "
            "(moonbus serve --admin-eval) to allow evaluating Lua in running scripts")


class _Eval:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def __call__(self, args: Sequence[str]) -> str:
        name, chunk = args[0], " ".join(args[1:])
        shown, _ = clip(chunk, self.rt.settings.max_log_line)
        if not self.rt.settings.admin_eval:
            _log.warning("script.eval refused (disabled) for script %r: %s", name, shown)
            raise AdminError(DISABLED)
        try:
            host = self.rt.script(name)
        except KeyError:
            raise AdminError(f"no script named {name!r}") from None
        _log.warning("script.eval in script %r: %s", name, shown)
        self.rt.host_log(host.name, "warn", f"admin script.eval: {shown}")
        return host.evaluate(chunk)


def register_eval(reg: CommandRegistry, rt: Runtime) -> None:
    """Add ``script.eval`` to ``reg`` (it checks ``rt.settings.admin_eval`` each time)."""
    reg.register("script.eval", _Eval(rt), usage="script.eval <name> <lua...>",
                 help="evaluate Lua in a running script (off unless --admin-eval; audited)",
                 args=(2, 10_000))
