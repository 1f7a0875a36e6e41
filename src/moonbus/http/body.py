"""Reading a JSON request body without trusting its size or its shape.

The body is read in the chunks the server hands over and refused (413) as
soon as it passes ``max_bytes``, whether or not the client announced a
``Content-Length`` (a chunked upload announces none; one that announces too
much is refused before a byte is read). It must then be UTF-8 JSON holding
an object; anything else is a 400 naming what was wrong.

Threads: the server's event-loop thread (it awaits the request stream).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

__all__ = ["BodyError", "read_json_object"]


class BodyError(Exception):
    """A request body that was refused: its HTTP status and the message to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body of ``request`` as a JSON object, or ``BodyError`` (400 or 413)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyError(400, "Content-Length must be a number of bytes")
        if int(declared) > max_bytes:
            raise BodyError(413, f"the request body is over the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyError(413, f"the request body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise BodyError(400, 'a JSON body is required, e.g. {"value": 5}')
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # "[[[[..." nested past the parser's depth
        raise BodyError(400, "the body's JSON is nested too deeply") from None
    if not isinstance(value, dict):
        raise BodyError(400, f"the body must be a JSON object, got {type(value).__name__}")
    return value
