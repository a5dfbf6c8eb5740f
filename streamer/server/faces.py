"""A live session's enrolled faces (the allow-list / deny-list of ``identity``): list, enrol from the live picture or
from a photo, remove. Embeddings only, in the session's memory, gone when it closes; never logged.

    GET    /sessions/{id}/faces                 {"identity", "people": {name: count}, "available", "reason"}
    POST   /sessions/{id}/faces                 JSON {"name", "from": "live"}, or multipart name + file (a photo)
    DELETE /sessions/{id}/faces/{name}          one person
    DELETE /sessions/{id}/faces                 everyone
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from typing import Any

from aiohttp import BodyPartReader, web

from ..identity.embedding import Embedding
from ..identity.enroll import face_embedding
from ..offline import InputError, image_from_bytes
from .sessions import LiveSession
from .state import DETECTION, RECOGNITION, SESSIONS, error_response

logger = logging.getLogger(__name__)

CAPTURE_TIMEOUT_S = 10.0  # a face must come into view within this after "keep my face"
BODY_TIMEOUT_S = 30.0  # the whole body (bodies.py leaves this route's to us: a photo is larger than the app's limit)
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_NAME_BYTES = 256
ENROLMENTS = web.AppKey("enrolments", asyncio.Semaphore)  # one photo at a time, all sessions together


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _session(request: web.Request) -> LiveSession:
    session = request.app[SESSIONS].get(request.match_info["session"])
    if not isinstance(session, LiveSession):
        raise Refused(404, "no such session")
    return session


def _listing(request: web.Request, session: LiveSession) -> dict[str, Any]:
    reason = request.app[RECOGNITION].unavailable
    return {"identity": session.settings.identity, "people": session.gallery.counts(), "available": reason is None,
            "reason": reason}


async def start_recognition(request: web.Request) -> None:
    """Face recognition running (its process started off the event loop), or Refused with why not."""
    recognition = request.app[RECOGNITION]
    reason = recognition.unavailable
    if reason is not None:
        raise Refused(501, reason)
    try:
        await asyncio.get_running_loop().run_in_executor(None, recognition.embedder)
    except RuntimeError as exc:
        raise Refused(503, f"face recognition cannot start: {exc}") from None


async def get_faces(request: web.Request) -> web.Response:
    try:
        return web.json_response(_listing(request, _session(request)))
    except Refused as exc:
        return error_response(exc.status, str(exc))


async def _from_live(session: LiveSession) -> Embedding:
    future = session.identity_policy().capture()
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), CAPTURE_TIMEOUT_S)
    except TimeoutError:
        future.cancel()
        raise Refused(408, f"no face came into view within {CAPTURE_TIMEOUT_S:.0f} s; look at the camera and "
                           "try again") from None
    except ValueError as exc:
        raise Refused(422, str(exc)) from None
    except asyncio.CancelledError:
        if not future.cancelled():
            raise  # this request itself is being cancelled (the client left, the server stops)
        raise Refused(409, "the session ended before a face was enrolled") from None
    except Exception as exc:  # the recognition worker failed or is restarting
        raise Refused(503, f"face recognition failed ({type(exc).__name__}); try again") from None


async def _part_bytes(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise Refused(413, f"field {part.name!r} is larger than {limit // 1024} KiB")
    try:
        return bytes(part.decode(bytes(data)))
    except (RuntimeError, zlib.error) as exc:
        raise Refused(400, f"field {part.name!r} cannot be decoded: {exc}") from None


async def _next_part(reader: Any) -> Any:
    try:
        return await reader.next()
    except ValueError as exc:  # no boundary where one should be, a malformed part header
        raise Refused(400, f"the multipart body cannot be read: {exc}") from None


async def _from_photo(request: web.Request) -> tuple[str, Embedding]:
    try:
        reader = await request.multipart()
    except ValueError as exc:
        raise Refused(400, f"the multipart body cannot be read: {exc}") from None
    name: str | None = None
    photo: bytes | None = None
    while (part := await _next_part(reader)) is not None:
        if not isinstance(part, BodyPartReader):
            raise Refused(400, "nested multipart bodies are not supported")
        if part.name == "name":
            try:
                name = (await _part_bytes(part, MAX_NAME_BYTES)).decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(400, "name must be UTF-8 text") from None
        elif part.name == "file":
            photo = await _part_bytes(part, MAX_PHOTO_BYTES)
        else:
            raise Refused(400, f"unknown field {part.name!r}; send name and file")
    if name is None or photo is None:
        raise Refused(400, "send a name and a photo (multipart fields name and file)")
    try:
        image = image_from_bytes(photo, "the photo")
    except InputError as exc:
        raise Refused(415, str(exc)) from None
    detector = request.app[DETECTION].background_detector()
    try:
        embedder = request.app[RECOGNITION].embedder()
        embedding = await asyncio.get_running_loop().run_in_executor(None, face_embedding, detector, embedder, image)
    except ValueError as exc:
        raise Refused(422, str(exc)) from None
    except Exception as exc:  # the recognition worker failed, timed out or is restarting
        raise Refused(503, f"face recognition failed ({type(exc).__name__}); try again") from None
    return name, embedding


async def post_face(request: web.Request) -> web.Response:
    try:
        session = _session(request)
        await start_recognition(request)
        if request.content_type.startswith("multipart/"):
            enrolments = request.app[ENROLMENTS]
            if enrolments.locked():
                raise Refused(429, "another photo is being enrolled; try again in a moment")
            try:
                # Each holds up to 10 MiB and an inference: one at a time is plenty for people enrolling faces.
                async with enrolments, asyncio.timeout(BODY_TIMEOUT_S):
                    name, embedding = await _from_photo(request)
            except TimeoutError:
                raise Refused(408, f"the photo did not arrive within {BODY_TIMEOUT_S:.0f} s") from None
            source = "a photo"
        else:
            try:
                async with asyncio.timeout(BODY_TIMEOUT_S):
                    raw = await request.read()  # at most the app's client_max_size
                body = json.loads(raw)
            except TimeoutError:
                raise Refused(408, f"the body did not arrive within {BODY_TIMEOUT_S:.0f} s") from None
            except (ValueError, RecursionError):
                raise Refused(400, "send JSON {\"name\": ..., \"from\": \"live\"} or a multipart photo") from None
            if not isinstance(body, dict) or body.get("from") != "live" or not isinstance(body.get("name"), str):
                raise Refused(400, "send JSON {\"name\": ..., \"from\": \"live\"} or a multipart photo")
            name = body["name"]
            embedding = await _from_live(session)
            source = "the live picture"
        try:
            session.gallery.add(name, embedding)
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
    except Refused as exc:
        return error_response(exc.status, str(exc))
    # The name is the viewer's own label; it is not logged, nor is anything of the face.
    logger.info("[session %s] a face was enrolled from %s (%d person(s) enrolled)", session.id, source,
                len(session.gallery))
    return web.json_response(_listing(request, session), status=201)


async def delete_face(request: web.Request) -> web.Response:
    try:
        session = _session(request)
    except Refused as exc:
        return error_response(exc.status, str(exc))
    if not session.gallery.remove(request.match_info["name"]):
        return error_response(404, "nobody of that name is enrolled")
    return web.json_response(_listing(request, session))


async def delete_faces(request: web.Request) -> web.Response:
    try:
        session = _session(request)
    except Refused as exc:
        return error_response(exc.status, str(exc))
    session.gallery.clear()
    return web.json_response(_listing(request, session))


def add_routes(app: web.Application) -> None:
    app[ENROLMENTS] = asyncio.Semaphore(1)
    app.router.add_get("/sessions/{session}/faces", get_faces)
    app.router.add_post("/sessions/{session}/faces", post_face)
    app.router.add_delete("/sessions/{session}/faces/{name}", delete_face)
    app.router.add_delete("/sessions/{session}/faces", delete_faces)
