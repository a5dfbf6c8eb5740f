"""Cameras managed at run time: ``POST /cameras`` adds one, ``PUT /cameras/{name}`` replaces its settings (the
camera restarts with them), ``DELETE /cameras/{name}`` stops it and ends its viewers.

- Only on a server with an access token: these routes decide what the server pulls from the network, so without
  one they answer 403 (reading ``/cameras`` is unchanged). The same-origin guard covers them like every change.
- A body is a ``[[camera]]`` table as JSON, checked by ``camera_from_mapping``, the cameras file's own rule.
  ``PUT`` without ``url`` (or with the redacted one it was shown) keeps the old one, so a client that only ever
  saw the redacted URL can edit the rest.
- Changes are serialized by one lock; with ``serve --config FILE`` each is written to the file first (see
  camera_store.py) and applied only once written, so a refused write changes nothing. Without ``--config`` they
  live in memory (``"persisted": false``). Cameras given with ``--camera`` are not the API's to change (409).
- With ``serve --shard I/N`` and N > 1 every change is refused (409): all N replicas read the same cameras file, and
  one writing it would race the others (and could hand a camera to a shard that never loads it until restarted).
- URLs leave only redacted, in answers and in logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from ..camera_config import CameraSettings, camera_from_mapping
from ..camera_store import CameraFile, CameraFileChanged
from ..cameras import Camera
from ..redact import redact_url
from ..shards import Shard
from ..sinks.restream import shown_restream
from .bodies import CAMERA_BODY_BYTES
from .sessions import ViewerSession
from .state import CAMERAS, CONFIG, RECOGNITION, VIEWERS, error_response

logger = logging.getLogger(__name__)

REMOVE_JOIN_S = 5.0  # DELETE waits this long for the camera's threads (a pull stuck opening may need longer)
NO_TOKEN = ("managing cameras needs an access token, because it decides what this server pulls from the network: "
            "start serve with --token-file PATH (or $STREAMER_TOKEN_FILE, --token, $STREAMER_TOKEN)")
SHARDED = ("cameras cannot be changed through the API on a sharded service (--shard {shard}): every replica reads the "
           "same cameras file, and one replica writing it would race the others. Edit the cameras file (in "
           "Kubernetes, its ConfigMap) and restart the replicas")


class CameraAdmin:
    """The lock every change holds, and the cameras file (None: changes live in memory only)."""

    def __init__(self, file: CameraFile | None, enabled: bool, shard: Shard | None = None) -> None:
        self.file = file
        self.shard = shard or Shard()
        self.enabled = enabled and not self.shard.sharded
        self.lock = asyncio.Lock()

    def info(self) -> dict[str, Any]:
        reason = None if self.enabled else "shard" if self.shard.sharded else "token"
        return {"enabled": self.enabled, "persisted": self.file is not None, "reason": reason}


ADMIN = web.AppKey("camera_admin", CameraAdmin)


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def management_info(app: web.Application) -> dict[str, Any]:
    """For /config and /cameras: whether cameras may be changed here, and whether changes outlive a restart."""
    return app[ADMIN].info()


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if len(raw) > CAMERA_BODY_BYTES:  # a chunked body has no Content-Length for the middleware to refuse early
        raise Refused(413, f"request body too large: at most {CAMERA_BODY_BYTES} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Refused(400, "the body is not valid JSON: arrays or objects nested too deeply") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object with the keys of a [[camera]] table")
    return body


def settings_from_body(mapping: dict[str, Any]) -> CameraSettings:
    try:
        return camera_from_mapping(mapping)
    except (TypeError, ValueError) as exc:  # the messages never quote the URL but redacted
        raise Refused(400, str(exc)) from None


def _managed(request: web.Request, name: str) -> Camera:
    camera = request.app[CAMERAS].get(name)
    if camera is None:
        raise Refused(404, f"no camera named {name!r}")
    if camera.fixed:
        raise Refused(409, f"camera {name} was given with --camera on the command line; change it there")
    return camera


async def _save(request: web.Request, cameras: list[CameraSettings], name: str, what: str) -> bool:
    """Write the cameras that are the API's to the file, if there is one; True when written."""
    admin = request.app[ADMIN]
    if admin.file is None:
        return False
    try:
        await asyncio.get_running_loop().run_in_executor(None, admin.file.write, cameras)
    except CameraFileChanged:
        logger.warning("[camera %s] not %s: %s changed on disk since the service read it", name, what,
                       admin.file.path)
        raise Refused(409, f"the cameras file {admin.file.path} was changed on disk since the service read it; "
                           "nothing was changed. Restart the service to load it (a change here would overwrite "
                           "it)") from None
    except OSError as exc:
        logger.error("[camera %s] not %s: cannot write %s (%s)", name, what, admin.file.path,
                     exc.strerror or type(exc).__name__)
        raise Refused(500, f"cannot write the cameras file {admin.file.path} "
                           f"({exc.strerror or type(exc).__name__}); nothing was changed") from None
    return True


async def _ensure_recognition(request: web.Request, settings: CameraSettings) -> None:
    """A camera with a gallery starts only with face recognition running (else it would hide every face)."""
    if settings.gallery is None:
        return
    try:
        await asyncio.get_running_loop().run_in_executor(None, request.app[RECOGNITION].embedder)
    except RuntimeError as exc:
        raise Refused(400, f"keep_faces/hide_only_faces: {exc}") from None


def _file_cameras(request: web.Request) -> list[CameraSettings]:
    return [c.settings for c in request.app[CAMERAS] if not c.fixed]


def _answer(camera: Camera, persisted: bool, status: int = 200) -> web.Response:
    headers = {"Location": f"/cameras/{camera.name}"} if status == 201 else None
    return web.json_response({"camera": camera.status(), "persisted": persisted}, status=status, headers=headers)


def _check_allowed(request: web.Request) -> None:
    shard = request.app[CONFIG].shard
    if shard.sharded:  # first: a token would not make the change safe
        raise Refused(409, SHARDED.format(shard=shard))
    if request.app[CONFIG].token is None:
        raise Refused(403, NO_TOKEN)


async def post_camera(request: web.Request) -> web.Response:
    try:
        _check_allowed(request)
        settings = settings_from_body(await _body(request))
        async with request.app[ADMIN].lock:
            cameras = request.app[CAMERAS]
            if cameras.get(settings.name) is not None:
                raise Refused(409, f"a camera named {settings.name} exists already")
            await _ensure_recognition(request, settings)
            persisted = await _save(request, [*_file_cameras(request), settings], settings.name, "added")
            camera = cameras.add(settings)
    except Refused as exc:
        return error_response(exc.status, str(exc))
    logger.info("[camera %s] added through the API (%s; %s)", camera.name, redact_url(settings.url),
                "saved to the cameras file" if persisted else "in memory only")
    return _answer(camera, persisted, 201)


async def put_camera(request: web.Request) -> web.Response:
    name = request.match_info["camera"]
    try:
        _check_allowed(request)
        body = await _body(request)
        if "name" in body and body["name"] != name:
            raise Refused(400, "the name in the body differs from the one in the path; a camera cannot be "
                               "renamed (remove it and add it under the new name)")
        async with request.app[ADMIN].lock:
            camera = _managed(request, name)
            # No URL in the body, or the redacted one the client was shown (it sent back GET's "settings"): the
            # current one, password included.
            current_url = camera.settings.url
            url = body.get("url", current_url)
            # The same for the restream target, shown as scheme://host:port/*** (its path may be a stream key).
            restream = body.get("restream")
            if camera.settings.restream is not None and restream == shown_restream(camera.settings.restream):
                restream = camera.settings.restream
            settings = settings_from_body({**body, "name": name, **({"restream": restream} if restream else {}),
                                           "url": current_url if url == redact_url(current_url) else url})
            await _ensure_recognition(request, settings)
            current = _file_cameras(request)
            persisted = await _save(request, [settings if c.name == name else c for c in current], name, "changed")
            camera.reconfigure(settings)
    except Refused as exc:
        return error_response(exc.status, str(exc))
    logger.info("[camera %s] changed through the API (%s; %s)", name, redact_url(settings.url),
                "saved to the cameras file" if persisted else "in memory only")
    return _answer(camera, persisted)


async def delete_camera(request: web.Request) -> web.Response:
    name = request.match_info["camera"]
    app = request.app
    try:
        _check_allowed(request)
        async with app[ADMIN].lock:
            camera = _managed(request, name)
            persisted = await _save(request, [c for c in _file_cameras(request) if c.name != name], name, "removed")
            app[CAMERAS].remove(name)
            viewers = [v for v in app[VIEWERS].values() if isinstance(v, ViewerSession) and v.camera == name]
    except Refused as exc:
        return error_response(exc.status, str(exc))
    # Outside the lock: other changes need not wait for peers to close or threads to end.
    await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
    stopped = await asyncio.get_running_loop().run_in_executor(None, camera.join, REMOVE_JOIN_S)
    if not stopped:
        logger.warning("[camera %s] removed; its threads are still ending (a pull stuck opening ends within its "
                       "open timeout)", name)
    logger.info("[camera %s] removed through the API (%d viewer(s) closed; %s)", name, len(viewers),
                "saved to the cameras file" if persisted else "in memory only")
    return web.json_response({"removed": name, "viewers_closed": len(viewers), "stopped": stopped,
                              "persisted": persisted})


def add_routes(app: web.Application) -> None:
    config = app[CONFIG]
    app[ADMIN] = CameraAdmin(CameraFile(config.cameras_file) if config.cameras_file is not None else None,
                             enabled=config.token is not None, shard=config.shard)
    app.router.add_post("/cameras", post_camera)
    app.router.add_put("/cameras/{camera}", put_camera)
    app.router.add_delete("/cameras/{camera}", delete_camera)
