"""Turning ``SCRIPT... --option ...`` into checked script plans, before anything runs.

``plan_scripts`` reads every script (file or folder), names them uniquely
(``mining``, ``mining#2``), works out each one's options and validates them
against the manifest defaults. It raises before a runtime exists, so bad
input never leaves a half-started run behind (SPEC §8: nothing started).
The command line then compiles every planned file
(``moonbus.cli.script_check.compile_problems``); the replay bench plans
without it.

Pure apart from reading the script files; runs on the control thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from moonbus.host.source import load_source, merge_options
from moonbus.session.script_options import (
    check_targets,
    options_for,
    parse_option,
    unique_names,
)
from moonbus.session.session import ScriptPlan

__all__ = ["plan_scripts"]


def plan_scripts(paths: Sequence[str], option_texts: Sequence[str]) -> list[ScriptPlan]:
    """Plans in the order given; ``ConfigError`` naming the first bad path or option."""
    settings = [parse_option(text) for text in option_texts]
    sources = [load_source(path) for path in paths]
    bases = [source.name for source in sources]
    names = unique_names(bases)
    check_targets(settings, names, bases)
    plans: list[ScriptPlan] = []
    for path, source, name in zip(paths, sources, names, strict=True):
        options = options_for(name, source.name, settings, source.defaults)
        merge_options(source.defaults, options)  # a bad value for a typed default fails here
        plans.append(ScriptPlan(name=name, display=path, source=source, options=options))
    return plans
