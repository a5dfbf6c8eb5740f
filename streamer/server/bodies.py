"""A deadline on request bodies: a client that sends its body a byte at a time cannot hold a connection open.

aiohttp has no read timeout for bodies, so every small body (offers, settings, the login form) is read here,
whole, within ``BODY_TIMEOUT_S``; handlers then get it from aiohttp's cache. Uploads stream to disk instead and
bound the wait for each chunk themselves (``server/jobs.py``), and a photo to enrol is read within its own
deadline and size (``server/faces.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp import web

from .state import error_response

logger = logging.getLogger(__name__)

BODY_TIMEOUT_S = 10.0
STREAMED = frozenset({("POST", "/jobs")})
FACES = re.compile(r"/sessions/[^/]+/faces")  # a photo to enrol: streamed and bounded by server/faces.py
# The login form is the one body anyone may send to a server with a token: a token and a path fit in 4 KiB.
SMALL = {("POST", "/login"): 4096}
# A camera's settings (POST /cameras, PUT /cameras/{name}): ten keys and a URL fit in 8 KiB many times over.
CAMERA_BODY_BYTES = 8192


def small_limit(method: str, path: str) -> int | None:
    """The size limit of a body that is small by nature, below the app's own (``max_offer_bytes``)."""
    if (method == "POST" and path == "/cameras") or (method == "PUT" and path.startswith("/cameras/")):
        return CAMERA_BODY_BYTES
    return SMALL.get((method, path))


@web.middleware
async def body_deadline(request: web.Request, handler: Any) -> web.StreamResponse:
    small = small_limit(request.method, request.path)
    if small is not None and (request.content_length or 0) > small:
        response = error_response(413, f"request body too large: at most {small} bytes")
        response.force_close()
        return response
    streamed = (request.method, request.path) in STREAMED or (request.method == "POST"
                                                                and FACES.fullmatch(request.path) is not None)
    if request.body_exists and not streamed:
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                await request.read()  # over client_max_size: 413, worded by the json_errors middleware
        except TimeoutError:
            logger.warning("[http] %s %s from %s: the body did not arrive within %.0f s; closing", request.method,
                           request.path, request.remote, BODY_TIMEOUT_S)
            response = error_response(408, f"the request body did not arrive within {BODY_TIMEOUT_S:.0f} s")
            response.force_close()
            return response
    answer: web.StreamResponse = await handler(request)
    return answer
