"""GET .../audit?minutes=N: the last minutes of a stream's audit trail (``streamer.audit``) as JSON lines."""

from __future__ import annotations

import math

from aiohttp import web

from ..audit import AuditRing
from .state import error_response


def audit_response(request: web.Request, ring: AuditRing, name: str) -> web.Response:
    """The ring's lines of the last ``minutes`` (default: all it keeps), oldest first."""
    text = request.query.get("minutes")
    minutes = ring.seconds / 60
    if text is not None:
        try:
            minutes = float(text)
        except ValueError:
            minutes = math.nan
        if not math.isfinite(minutes) or minutes <= 0:
            return error_response(400, "minutes must be a positive number")
    body = b"".join(ring.since(minutes * 60))
    return web.Response(body=body, content_type="application/x-ndjson", headers={
        "Content-Disposition": f'attachment; filename="{name}-audit.jsonl"', "Cache-Control": "no-store"})
