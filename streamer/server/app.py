"""aiohttp app factory. The detector loads off the event loop at start-up; /healthz reports readiness."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from models import DetectorConfig, load_detector
from models.centerface import CenterFaceDetector

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
DETECTOR = web.AppKey("detector", CenterFaceDetector)
DETECTOR_ERROR = web.AppKey("detector_error", str)
LOAD_ARGS = web.AppKey("load_args", dict)

CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    detector = app.get(DETECTOR)
    error = app.get(DETECTOR_ERROR)
    ready = detector is not None
    body = {
        "status": "ok" if ready else ("error" if error else "starting"),
        "ready": ready,
        "provider": detector.provider if detector is not None else None,
        "error": error,
    }
    return web.json_response(body, status=200 if ready else 503)


async def _load_detector(app: web.Application) -> None:
    args = app[LOAD_ARGS]
    try:
        detector = await asyncio.get_running_loop().run_in_executor(None, lambda: load_detector(**args))
        app[DETECTOR] = detector
        logger.info("[server] detector ready on %s", detector.provider)
    except Exception as exc:
        logger.error("[server] detector failed to load: %s", exc)
        app[DETECTOR_ERROR] = str(exc)


def create_app(device: str = "auto", model: Path | None = None,
               config: DetectorConfig | None = None) -> web.Application:
    app = web.Application(middlewares=[security_headers], client_max_size=1 << 20)
    app[LOAD_ARGS] = {"device": device, "model": model, "config": config}
    app.on_startup.append(_load_detector)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", WEB_DIR, show_index=False)
    return app


def run(args: argparse.Namespace) -> None:
    config = DetectorConfig(detect_size=args.detect_size, threshold=args.threshold, threads=args.threads)
    app = create_app(args.device, args.model, config)
    logger.info("[server] listening on http://%s:%d", args.host, args.port)
    web.run_app(app, host=args.host, port=args.port, print=None)
