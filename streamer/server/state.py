"""Typed keys for what the app holds (state lives in app[...], never in globals), and the JSON error shape."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..cameras import CameraManager
from ..detection_service import DetectionService
from ..identity.service import FaceRecognition
from ..jobs import JobManager
from .capacity import DetectorLoad
from .config import ServerConfig
from .metrics import ServerMetrics
from .sessions import SessionRegistry

CAMERAS = web.AppKey("cameras", CameraManager)
CONFIG = web.AppKey("config", ServerConfig)
DETECTOR_LOAD = web.AppKey("detector_load", DetectorLoad)
DETECTION = web.AppKey("detection", DetectionService)
DETECTOR_ERROR = web.AppKey("detector_error", str)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
JOBS = web.AppKey("jobs", JobManager)
RECOGNITION = web.AppKey("recognition", FaceRecognition)
METRICS = web.AppKey("metrics", ServerMetrics)
SESSIONS = web.AppKey("sessions", SessionRegistry)
VIEWERS = web.AppKey("viewers", SessionRegistry)


def error_response(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)
