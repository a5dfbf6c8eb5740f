"""Live webcam sessions over HTTP: POST /offer (aiortc's convention), and per-session state and settings."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from ..settings import LiveSettings
from .audit_download import audit_response
from .capacity import refusal
from .faces import Refused, start_recognition
from .sessions import LiveSession
from .state import CAMERAS, CONFIG, DETECTION, DETECTOR_LOAD, METRICS, RECOGNITION, SESSIONS, error_response

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5


# Caps checked before aiortc parses anything: it parses on the event loop, and one 231 KB offer with 800 media
# sections held the loop for seconds (every live stream froze). Its codec matching also grows with rtpmap x rtcp-fb
# lines in a section: 600 x 1,200 within 64 KB held it 7 s. A browser's offer is a few KB: two or three sections,
# each with up to ~40 rtpmap, ~100 rtcp-fb and a few ssrc lines.
MAX_SDP_BYTES = 64 * 1024
MAX_SDP_LINES = 1000
MAX_MEDIA_SECTIONS = 8
MAX_CANDIDATES = 64
MAX_PER_SECTION = {"a=rtpmap:": 64, "a=rtcp-fb:": 256, "a=ssrc:": 64, "a=fmtp:": 64}


def check_offer_sdp(sdp: str) -> None:
    """ValueError with the reason when ``sdp`` is not an offer this server will parse."""
    if len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise ValueError(f"the offer is too large: at most {MAX_SDP_BYTES} bytes of SDP")
    if not sdp.lstrip().startswith("v=0"):
        raise ValueError("sdp is not a session description (it must start with v=0)")
    lines = sdp.splitlines()  # as aiortc splits it
    if len(lines) > MAX_SDP_LINES:
        raise ValueError(f"the offer has {len(lines)} lines; at most {MAX_SDP_LINES} are accepted")
    media = [line for line in lines if line.startswith("m=")]
    if len(media) > MAX_MEDIA_SECTIONS:
        raise ValueError(f"the offer has {len(media)} media sections; at most {MAX_MEDIA_SECTIONS} are accepted")
    counts: dict[str, int] = {}
    for line in lines:
        if line.startswith("m="):
            counts = {}
            continue
        for prefix, most in MAX_PER_SECTION.items():
            if line.startswith(prefix):
                counts[prefix] = counts.get(prefix, 0) + 1
                if counts[prefix] > most:
                    raise ValueError(f"a media section of the offer has more than {most} {prefix[2:-1]} lines")
    candidates = sum(1 for line in lines if line.startswith("a=candidate:"))
    if candidates > MAX_CANDIDATES:
        raise ValueError(f"the offer has {candidates} ICE candidates; at most {MAX_CANDIDATES} are accepted")
    if not any(line.startswith("m=video ") for line in media):
        raise ValueError("the offer has no video track")


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()  # over client_max_size: 413, worded by the json_errors middleware
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from exc
    except RecursionError:  # json's decoder recurses per level: "[" * 100000 fits in the size limit
        raise ValueError("body is not valid JSON: arrays or objects nested too deeply") from None


def sdp_error(exc: Exception) -> ValueError:
    """aiortc refuses some SDP with a bare assert or a KeyError: say at least that, never "malformed SDP: "."""
    detail = str(exc) if isinstance(exc, ValueError) and str(exc) else f"the WebRTC stack refused it ({exc!r})"
    return ValueError(f"malformed SDP: {detail}")


def capacity_refused(app: web.Application, label: str) -> web.Response | None:
    """503 + Retry-After when one more detecting stream would push the shared detector past
    --max-detector-load (see capacity.py), so that the streams already served keep their frame rate."""
    config, detection = app[CONFIG], app[DETECTION]
    streams = len(app[SESSIONS]) + sum(1 for c in app[CAMERAS] if c.status()["state"] != "stopped")
    why = refusal(app[DETECTOR_LOAD], streams, config.max_detector_load, detection.batch.max_batch)
    if why is None:
        return None
    logger.warning("[%s] refused: %s", label, why)
    return error_response(503, why, retry_after=RETRY_AFTER_S)


def _offer_fields(body: Any) -> tuple[str, LiveSettings]:
    """The offer's SDP and the session's starting settings; ValueError with the reason."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object with sdp and type")
    sdp, kind = body.get("sdp"), body.get("type")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ValueError("sdp must be a non-empty string")
    if kind != "offer":
        raise ValueError(f"type must be \"offer\", not {kind!r}")
    unknown = sorted(set(body) - {"sdp", "type", "options"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    options = body.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError("options must be a JSON object")
    settings = LiveSettings().updated(options)
    check_offer_sdp(sdp)
    return sdp, settings


async def post_offer(request: web.Request) -> web.Response:
    app = request.app
    config, sessions = app[CONFIG], app[SESSIONS]
    detection = app.get(DETECTION)
    if detection is None:
        return error_response(503, "the face detector is not ready yet", retry_after=RETRY_AFTER_S)
    if detection.failed is not None:
        return error_response(503, f"the face detector has stopped: {detection.failed}")
    try:
        sdp, settings = _offer_fields(await _read_json(request))
        if settings.identity != "off":
            await start_recognition(request)
    except ValueError as exc:
        return error_response(400, str(exc))
    except Refused as exc:
        return error_response(exc.status, str(exc))
    # From the limits to the new session's place in the registry without an await: two offers arriving together
    # cannot both take the last slot.
    if len(sessions) >= config.max_sessions:
        logger.warning("[offer] refused: %d of %d sessions in use", len(sessions), config.max_sessions)
        return error_response(503, f"server is full ({config.max_sessions} live sessions); try again shortly",
                              retry_after=RETRY_AFTER_S)
    refused = capacity_refused(app, "offer")
    if refused is not None:
        return refused
    session = LiveSession(config, sessions, detection, app[METRICS], settings, app[RECOGNITION])
    try:
        try:
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:
            raise sdp_error(exc) from exc
        if session.video is None:
            raise ValueError("the offer does not send video (its video is recvonly or inactive)")
        await session.pc.setLocalDescription(await session.pc.createAnswer())
    except ValueError as exc:
        await session.close()
        return error_response(400, str(exc))
    except Exception as exc:
        logger.exception("[session %s] could not answer the offer", session.id)
        await session.close()
        return error_response(400, f"could not negotiate this offer: {exc}")
    session.watch_connect()
    logger.info("[session %s] answered an offer from %s (%d session(s) open)", session.id, request.remote,
                len(sessions))
    local = session.pc.localDescription
    return web.json_response({"sdp": local.sdp, "type": local.type, "session": session.id})


def _session(request: web.Request) -> LiveSession:
    session = request.app[SESSIONS].get(request.match_info["session"])
    if not isinstance(session, LiveSession):
        raise web.HTTPNotFound(text=json.dumps({"error": "no such session"}), content_type="application/json")
    return session


async def get_session(request: web.Request) -> web.Response:
    return web.json_response(_session(request).snapshot())


async def post_settings(request: web.Request) -> web.Response:
    session = _session(request)
    try:
        changes = await _read_json(request)
        if isinstance(changes, dict) and changes.get("identity", "off") != "off":
            await start_recognition(request)
        settings = session.update(changes)
    except ValueError as exc:
        return error_response(400, str(exc))
    except Refused as exc:
        return error_response(exc.status, str(exc))
    return web.json_response(settings.as_dict())


async def get_audit(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    return await audit_response(request, session.audit, f"session-{session.id}")


async def delete_session(request: web.Request) -> web.Response:
    await _session(request).close()
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/offer", post_offer)
    app.router.add_get("/sessions/{session}", get_session)
    app.router.add_post("/sessions/{session}/settings", post_settings)
    app.router.add_get("/sessions/{session}/audit", get_audit)
    app.router.add_delete("/sessions/{session}", delete_session)
