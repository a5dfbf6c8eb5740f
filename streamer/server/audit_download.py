"""GET .../audit?minutes=N: the last minutes of a stream's audit trail (``streamer.audit``) as JSON lines."""

from __future__ import annotations

import math

from aiohttp import web

from ..audit import AuditRing
from .state import error_response

CHUNK_BYTES = 256 * 1024


async def audit_response(request: web.Request, ring: AuditRing, name: str) -> web.StreamResponse:
    """The ring's lines of the last ``minutes`` (default: all it keeps), oldest first, sent in chunks: a ring may
    hold tens of MB, which the event loop must not copy in one piece."""
    text = request.query.get("minutes")
    minutes = ring.seconds / 60
    if text is not None:
        try:
            minutes = float(text)
        except ValueError:
            minutes = math.nan
        if not math.isfinite(minutes) or minutes <= 0:
            return error_response(400, "minutes must be a positive number")
    lines = ring.since(minutes * 60)  # a list of the ring's own bytes objects: nothing is copied
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store",
                                           "Content-Disposition": f'attachment; filename="{name}-audit.jsonl"'})
    await response.prepare(request)
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            await response.write(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        await response.write(b"".join(chunk))
    await response.write_eof()
    return response
