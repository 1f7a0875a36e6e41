"""Finding and reading a script: a ``.lua`` file, or a folder with a manifest.

A folder script holds ``manifest.json`` and ``main.lua``; its modules are
loaded by ``require("name")`` (or ``require("sub.name")``) from that folder
only: names are restricted to ``[A-Za-z0-9_]`` segments separated by dots,
resolved paths must stay inside the folder (symlinks pointing outside are
refused), and nothing else on the file system is reachable.

``manifest.json`` (all keys optional)::

    {"name": "miner", "description": "...", "options": {"ore": "iron", "max": 5}}

``options`` are the defaults; the user's options override them. A user option
given as a string (from the command line) is converted to the type of the
manifest default when there is one ("5" → 5 for an int default).

Size: a file larger than ``max_bytes`` (``HostSettings.max_source_bytes``,
default 4 MiB) is refused with a ``ConfigError`` naming its size and the
limit, without reading more than the limit; the engines apply the same cap
again when compiling (``LuaEngine.compile``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moonbus.errors import ConfigError, ScriptError
from moonbus.lua.compile_limits import DEFAULT_MAX_SOURCE_BYTES

__all__ = ["ScriptSource", "load_source", "merge_options"]

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class ScriptSource:
    """The text of a script and where it came from."""

    name: str
    path: Path
    text: str
    chunkname: str
    folder: Path | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    max_bytes: int = DEFAULT_MAX_SOURCE_BYTES  # size cap of its modules too

    def read_module(self, module: str) -> tuple[str, str]:
        """(text, chunkname) of a ``require``d module of a folder script."""
        if self.folder is None:
            raise ScriptError(
                f"require({module!r}): only folder scripts (with manifest.json) can require modules"
            )
        if not isinstance(module, str) or not _MODULE_NAME.match(module):
            raise ScriptError(f"require({module!r}): invalid module name")
        relative = Path(*module.split(".")).with_suffix(".lua")
        candidate = (self.folder / relative).resolve()
        root = self.folder.resolve()
        if root not in candidate.parents:
            raise ScriptError(f"require({module!r}): outside the script folder")
        if not candidate.is_file():
            raise ScriptError(f"require({module!r}): no file {relative} in {self.folder.name}/")
        # Named as the script knows it (its folder's name, not the host's path).
        chunkname = f"{self.folder.name}/{relative.as_posix()}"
        return _read_text(candidate, self.max_bytes, chunkname), chunkname


def _read_text(path: Path, max_bytes: int, shown: str | None = None) -> str:
    name = shown or path
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)  # never more than the limit allows
            if len(data) > max_bytes:
                size = max(path.stat().st_size, len(data))
                raise ConfigError(
                    f"script {name} is {size} bytes, more than the limit of {max_bytes} "
                    "bytes (max_source_bytes)"
                )
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(f"cannot read script {name}: {reason}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"script {name} is not UTF-8 text (byte {exc.start})"
        ) from exc


def load_source(
    path: str | Path, *, text: str | None = None, max_bytes: int = DEFAULT_MAX_SOURCE_BYTES
) -> ScriptSource:
    """Read a script file or folder. ``text`` overrides the file's content (tests, reload).

    Files larger than ``max_bytes`` are refused (``ConfigError``); a ``text``
    is checked when it is compiled.
    """
    p = Path(path)
    if text is not None and not p.is_dir():
        return ScriptSource(name=p.stem, path=p, text=text, chunkname=p.name, max_bytes=max_bytes)
    if p.is_dir():
        manifest_path = p / "manifest.json"
        main = p / "main.lua"
        if not manifest_path.is_file():
            raise ConfigError(f"script folder {p} has no manifest.json")
        if not main.is_file():
            raise ConfigError(f"script folder {p} has no main.lua")
        try:
            manifest = json.loads(_read_text(manifest_path, max_bytes))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{manifest_path}:{exc.lineno}: invalid JSON: {exc.msg}"
            ) from exc
        if not isinstance(manifest, dict):
            raise ConfigError(f"{manifest_path}: the manifest must be a JSON object")
        defaults = manifest.get("options", {})
        if not isinstance(defaults, dict):
            raise ConfigError(f"{manifest_path}: 'options' must be an object")
        name = str(manifest.get("name") or p.name)
        return ScriptSource(
            name=name,
            path=p,
            text=_read_text(main, max_bytes) if text is None else text,
            chunkname=f"{p.name}/main.lua",
            folder=p,
            defaults=defaults,
            description=str(manifest.get("description", "")),
            max_bytes=max_bytes,
        )
    if not p.exists():
        raise ConfigError(f"script not found: {p}")
    if p.suffix != ".lua":
        raise ConfigError(f"not a Lua script (expected a .lua file or a folder): {p}")
    return ScriptSource(
        name=p.stem, path=p, text=_read_text(p, max_bytes), chunkname=p.name, max_bytes=max_bytes
    )


def _coerce(key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            lowered = value.strip().lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(
            f"option {key}={value!r}: expected {type(default).__name__} "
            f"like the default {default!r}"
        ) from None
    return value


def merge_options(defaults: Mapping[str, Any], user: Mapping[str, Any] | None) -> dict[str, Any]:
    """Manifest defaults overridden by the user's options.

    String values are coerced to the type of the manifest default, when there is one.
    """
    merged = dict(defaults)
    for key, value in (user or {}).items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"option names must be non-empty strings, got {key!r}")
        merged[key] = _coerce(key, value, defaults.get(key))
    return merged
