"""Lua-style printing of values, shared by ``moonbus repl`` and ``script.eval``.

``FORMATTER`` is Lua text (``value_printer.lua``), not Python: the values are printed inside the
script's own engine (under the caller's time limit), so no script value has
to be converted to Python to be shown. Pure data; any thread.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

__all__ = ["FORMATTER"]

#: The Lua chunk of ``value_printer.lua`` (compiled in a fresh sandbox environment) returning
#: ``run(f, width)``: calls ``f`` and returns how many values it gave and
#: them printed Lua-style, tab-separated: ``tostring`` for most values, plain
#: tables shown as constructors (two levels deep, 50 entries each, strings
#: quoted), the text cut at ``width`` characters. It runs inside the caller's
#: time limit (the REPL's, the admin command's), like the chunk itself.
FORMATTER: Final = resources.files("moonbus.lua").joinpath("value_printer.lua").read_text("utf-8")
