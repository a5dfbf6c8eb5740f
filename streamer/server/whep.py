"""Cameras over HTTP: WHEP viewers (POST /whep/{camera} -> 201 + Location; DELETE ends it), the camera list with
status, and snapshots of the latest anonymized frame."""

from __future__ import annotations

import asyncio
import logging

import cv2
from aiohttp import web
from aiortc import RTCSessionDescription

from ..cameras import Camera
from .audit_download import audit_response
from .camera_admin import management_info
from .offer import RETRY_AFTER_S, capacity_refused, check_offer_sdp, sdp_error
from .sessions import ViewerSession
from .state import CAMERAS, CONFIG, EXECUTOR, VIEWERS, error_response

logger = logging.getLogger(__name__)

SNAPSHOT_WAIT_S = 10.0


def _camera(request: web.Request) -> Camera | None:
    return request.app[CAMERAS].get(request.match_info["camera"])


async def post_whep(request: web.Request) -> web.Response:
    app = request.app
    camera = _camera(request)
    if camera is None:
        return error_response(404, f"no camera named {request.match_info['camera']!r}")
    if request.content_type != "application/sdp":
        return error_response(415, "WHEP offers must be sent with Content-Type: application/sdp")
    config, viewers = app[CONFIG], app[VIEWERS]
    raw = await request.read()
    try:
        sdp = raw.decode("utf-8")
    except UnicodeDecodeError:
        return error_response(400, "the offer is not UTF-8 text")
    try:
        check_offer_sdp(sdp)
    except ValueError as exc:
        return error_response(400, str(exc))
    # From the limits to the viewer's place in the registry without an await: two offers arriving together
    # cannot both take the last slot.
    if not camera.ready:
        return error_response(503, "the face detector is not ready yet", retry_after=RETRY_AFTER_S)
    if len(viewers) >= config.max_viewers:
        return error_response(503, f"server is full ({config.max_viewers} viewers); try again shortly",
                              retry_after=RETRY_AFTER_S)
    if camera.status()["state"] == "stopped":  # a viewer of a running camera adds no detection
        refused = capacity_refused(app, f"viewer of {camera.name}")
        if refused is not None:
            return refused
    viewer = ViewerSession(config, viewers, camera)
    try:
        try:
            await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:
            raise sdp_error(exc) from exc
        if not viewer.attach():
            raise ValueError("the offer has no video the server may send on")
        await viewer.pc.setLocalDescription(await viewer.pc.createAnswer())
    except Exception as exc:
        await viewer.close()
        if not isinstance(exc, ValueError):
            logger.exception("[viewer %s] could not answer a WHEP offer", viewer.id)
        return error_response(400, str(exc) if isinstance(exc, ValueError) else f"could not negotiate: {exc}")
    if app[CAMERAS].get(camera.name) is not camera:
        # Removed (DELETE /cameras/{name}) while this offer was negotiated: the removal's close missed this viewer.
        await viewer.close()
        return error_response(404, f"camera {camera.name} was removed")
    viewer.watch_connect()
    logger.info("[viewer %s] watching camera %s (%d viewer(s) of it)", viewer.id, camera.name, camera.viewers)
    location = f"/whep/{camera.name}/{viewer.id}"
    return web.Response(status=201, text=viewer.pc.localDescription.sdp, content_type="application/sdp",
                        headers={"Location": location})


async def delete_whep(request: web.Request) -> web.Response:
    viewer = request.app[VIEWERS].get(request.match_info["viewer"])
    if not isinstance(viewer, ViewerSession) or viewer.camera != request.match_info["camera"]:
        return error_response(404, "no such WHEP session")
    await viewer.close()
    return web.Response(status=200)


async def list_cameras(request: web.Request) -> web.Response:
    # "manage": whether POST/PUT/DELETE may change the cameras here (server/camera_admin.py), for the page.
    return web.json_response({"cameras": [camera.status() for camera in request.app[CAMERAS]],
                              "manage": management_info(request.app)})


async def get_camera(request: web.Request) -> web.Response:
    camera = _camera(request)
    if camera is None:
        return error_response(404, f"no camera named {request.match_info['camera']!r}")
    return web.json_response(camera.status())


async def snapshot(request: web.Request) -> web.Response:
    """The latest anonymized frame as JPEG; a stopped on-demand camera is started for it (and lingers)."""
    camera = _camera(request)
    if camera is None:
        return error_response(404, f"no camera named {request.match_info['camera']!r}")
    if not camera.ready:
        return error_response(503, "the face detector is not ready yet", retry_after=RETRY_AFTER_S)
    camera.acquire()
    try:
        published = await asyncio.wait_for(camera.next_frame(0), SNAPSHOT_WAIT_S)
    except TimeoutError:
        status = camera.status()
        reason = f": {status['error']}" if status["error"] else ""
        return error_response(503, f"camera {camera.name} has no picture yet ({status['state']}{reason})",
                              retry_after=RETRY_AFTER_S)
    finally:
        camera.release()
    loop = asyncio.get_running_loop()
    ok, jpeg = await loop.run_in_executor(request.app[EXECUTOR], cv2.imencode, ".jpg", published.bgr,
                                          [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        return error_response(500, "could not encode the snapshot")
    return web.Response(body=jpeg.tobytes(), content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def camera_audit(request: web.Request) -> web.StreamResponse:
    """The camera's audit trail: what was hidden in each frame of its last minutes (JSON lines)."""
    camera = _camera(request)
    if camera is None:
        return error_response(404, "no such camera")
    return await audit_response(request, camera.audit, f"camera-{camera.name}")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whep/{camera}", post_whep)
    app.router.add_delete("/whep/{camera}/{viewer}", delete_whep)
    app.router.add_get("/cameras", list_cameras)
    app.router.add_get("/cameras/{camera}", get_camera)
    app.router.add_get("/cameras/{camera}/snapshot.jpg", snapshot)
    app.router.add_get("/cameras/{camera}/audit", camera_audit)
