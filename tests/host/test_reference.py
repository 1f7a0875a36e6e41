"""The scripting reference lists every global a script can see, and nothing else.

The sandbox is probed from inside (both engines of a script, a folder script
for ``require``, and a runner job) and compared with
``moonbus.host.reference``, the one source the docs and the LuaLS stubs are
rendered from: a global added without a line in the reference, or a line
left for a global that is gone, fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

from moonbus import Runner, Runtime
from moonbus.host.reference import Reference

PROBE = r"""
local function members(t)
  local m = {}
  if type(t) == "table" then
    for k in pairs(t) do m[#m + 1] = tostring(k) end
  end
  table.sort(m)
  return m
end
local function probe()
  local globals, libs = {}, {}
  for k, v in pairs(_ENV) do
    globals[#globals + 1] = k
    -- string: its pattern functions load on first use, behind a protected
    -- metatable until then (moonbus.lua.lazy_strings); pairs sees them all.
    if type(v) == "table" and (getmetatable(v) == nil or k == "string") then
      libs[k] = members(v)
    end
  end
  table.sort(globals)
  local lines = { "G " .. table.concat(globals, " ") }
  for name, m in pairs(libs) do lines[#lines + 1] = "L " .. name .. " " .. table.concat(m, " ") end
  -- moonbus's own libraries hide their tables behind a metatable: ask by name
  for _, lib in ipairs({ "events", "logger", "stats", "shared" }) do
    local found = {}
    for _, fn in ipairs(REFERENCE[lib]) do
      found[#found + 1] = fn .. "=" .. type(_ENV[lib][fn])
    end
    lines[#lines + 1] = "M " .. lib .. " " .. table.concat(found, " ")
  end
  return lines
end
function on_start()
  for _, line in ipairs(probe()) do logger.info(line) end
  return false
end
for _, line in ipairs(probe()) do logger.info(line) end
"""


def _reference_table(ref: Reference) -> str:
    parts = []
    for g in ref.moonbus:
        if g.kind == "library":
            names = ", ".join(json.dumps(f.name) for f in g.functions)
            parts.append(f"{g.name} = {{{names}}}")
    return "REFERENCE = {" + ", ".join(parts) + "}\n"


def _probe(tmp_path: Path, folder: bool) -> dict[str, list[str]]:
    ref = Reference()
    source = _reference_table(ref) + PROBE
    if folder:
        root = tmp_path / "folder_probe"
        root.mkdir()
        (root / "main.lua").write_text(source)
        (root / "manifest.json").write_text("{}")
        path = root
    else:
        path = tmp_path / "probe.lua"
        path.write_text(source)
    lines: dict[str, list[str]] = {}
    with Runtime(threaded=False) as rt:
        h = rt.load(path)
        h.start()
        rt.run_due()
        for entry in rt.recent_logs:
            lines.setdefault(entry.engine, []).append(entry.msg)
    return lines


def _globals(lines: list[str]) -> set[str]:
    probe_names = {"REFERENCE", "on_start"}
    return {n for line in lines if line.startswith("G ") for n in line.split()[1:]} - probe_names


def _libraries(lines: list[str]) -> dict[str, set[str]]:
    libs = {}
    for line in lines:
        if line.startswith("L "):
            _, name, *members = line.split()
            libs[name] = set(members)
    return libs


def test_every_global_of_both_engines_is_in_the_reference(tmp_path: Path) -> None:
    ref = Reference()
    lines = _probe(tmp_path, folder=False)
    assert {"event", "main"} <= set(lines), lines  # the chunk ran in both engines
    for engine in ("event", "main"):
        seen = _globals(lines[engine])
        undocumented = seen - ref.global_names()
        assert not undocumented, f"globals missing from moonbus.host.reference: {undocumented}"
        # everything documented exists (require: folder scripts only)
        missing = ref.global_names() - seen - {"require"}
        assert not missing, f"documented globals that a script does not have: {missing}"


def test_require_exists_in_folder_scripts(tmp_path: Path) -> None:
    lines = _probe(tmp_path, folder=True)
    assert "require" in _globals(lines["main"])
    assert "require" in _globals(lines["event"])


def test_standard_library_members_match_the_reference(tmp_path: Path) -> None:
    ref = Reference()
    lines = _probe(tmp_path, folder=False)
    libs = _libraries(lines["main"])
    for name, (members, _summary) in ref.standard_libraries.items():
        assert libs.get(name) == set(members), (name, libs.get(name) ^ set(members))


def test_moonbus_library_functions_exist(tmp_path: Path) -> None:
    lines = _probe(tmp_path, folder=False)
    for line in lines["main"]:
        if line.startswith("M "):
            _, lib, *pairs = line.split()
            assert all(p.endswith("=function") for p in pairs), (lib, pairs)


def test_runner_jobs_see_only_documented_standard_globals() -> None:
    ref = Reference()
    allowed = set(ref.standard_functions) | set(ref.standard_values) | set(ref.standard_libraries)
    with Runner(workers=1) as runner:
        names = runner.submit(
            "local n = {} for k in pairs(_ENV) do n[#n + 1] = k end return n"
        ).result(timeout=10)
    assert set(names) <= allowed, set(names) - allowed
