"""Request bodies read as streams, within a size limit, so that no body is ever held whole before it is checked."""

from __future__ import annotations

from fastapi import Request

from ckey.api.problems import Problem


def too_large(limit: int, what: str = "the request body") -> Problem:
    """The 413 problem for a body over ``limit`` bytes."""
    return Problem(413, "body-size", f"{what} is larger than the limit of {limit:,} bytes")


async def read_body(request: Request, limit: int, what: str = "the request body") -> bytes:
    """The body of ``request``, refused with 413 as soon as its declared or streamed size passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit, what)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit, what)
        chunks.append(chunk)
    return b"".join(chunks)
