"""MkDocs hook: fills generated sections of the docs from the code.

``<!-- moonbus:lua-reference -->`` in a page becomes the scripting reference
rendered from ``moonbus.host.reference`` (the catalogue that
``tests/host/test_reference.py`` checks against the sandbox itself), so the
published list of globals cannot drift from what scripts really see.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- moonbus:lua-reference -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from moonbus.host.reference_markdown import render_reference

    return markdown.replace(MARKER, render_reference())
