"""Write a script's source to a file, load it into a runtime and start it."""

from __future__ import annotations

from pathlib import Path

from moonbus.host.script import ScriptHost
from moonbus.runtime import Runtime


def load_started(rt: Runtime, tmp_path: Path, text: str, name: str = "s") -> ScriptHost:
    """The started host of ``text``, saved as ``tmp_path/<name>.lua``."""
    path = tmp_path / f"{name}.lua"
    path.write_text(text, encoding="utf-8")
    host = rt.load(path)
    host.start()
    return host
