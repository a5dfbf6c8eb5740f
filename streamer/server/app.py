"""aiohttp app factory: the page, the live-session API, health, config and metrics.

The detector loads off the event loop at start-up (the service answers /healthz with 503 until then); at shutdown
every peer is closed before the executors go.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import ssl
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from models import DetectorConfig, open_detector
from models.centerface import CenterFace
from models.runtime import CUDA
from models.triton import TritonDetector, TritonTLS

from ..camera_config import load_cameras_file, parse_camera_arg
from ..cameras import CameraManager
from ..detection_service import BatchPolicy, DetectionService, cpu_inference_workers
from ..healthcheck import PORT_ENV, default_port
from ..identity.service import FaceRecognition
from ..jobs import JobManager
from ..malloc import heap_in_use
from ..settings import MODES, LiveSettings
from ..shards import describe
from ..sources.rtsp import RtspOptions
from . import auth, hosts
from .bodies import body_deadline
from .camera_admin import add_routes as add_camera_admin_routes
from .camera_admin import management_info
from .capacity import DetectorLoad
from .config import ServerConfig, parse_ice_server
from .faces import add_routes as add_face_routes
from .hostnames import binds_loopback_only
from .jobs import add_routes as add_job_routes
from .jobs import expire_loop
from .metrics import ServerMetrics
from .offer import add_routes
from .secret_files import read_secret_file, secret_from_env
from .sessions import SessionRegistry
from .state import (
    CAMERAS,
    CONFIG,
    DETECTION,
    DETECTOR_ERROR,
    DETECTOR_LOAD,
    EXECUTOR,
    JOBS,
    METRICS,
    RECOGNITION,
    SESSIONS,
    VIEWERS,
    error_response,
)
from .turn import DEFAULT_TTL_S, TurnRelay, check_ttl
from .webroot import PAGE_SUFFIXES, WEB_DIR
from .whep import add_routes as add_whep_routes

logger = logging.getLogger(__name__)

PRELOADED = web.AppKey("preloaded_detector", CenterFace)
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
PERMISSIONS = "camera=(self), microphone=(self), display-capture=(), geolocation=(), usb=(), payment=()"


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # Only this page may use the camera and microphone (--audio passthrough sends the microphone); nothing else.
    response.headers.setdefault("Permissions-Policy", PERMISSIONS)
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")  # API answers and pages are never cached
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves as {"error": "..."}; an unexpected exception is logged and answered 500, never a crash."""
    try:
        response: web.StreamResponse = await handler(request)
        filename = request.match_info.get("filename")
        if isinstance(response, web.FileResponse) and filename is not None:
            # A missing static file is only found when aiohttp sends it, as an empty 404: say so here instead.
            path = WEB_DIR / filename
            if path.suffix not in PAGE_SUFFIXES or not await asyncio.get_running_loop().run_in_executor(
                    None, path.is_file):
                return error_response(404, f"no such file: /static/{filename}")
        return response
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        if exc.status == 413:
            return error_response(413, f"request body too large: at most {request.app[CONFIG].max_offer_bytes} bytes")
        if exc.status == 405:
            # RFC 9110: a 405 must list what the path takes; the JSON answer replaces aiohttp's, headers included.
            allow = exc.headers.get("Allow", "")
            answer = error_response(405, f"{request.method} is not allowed here; use {allow or 'another method'}")
            answer.headers["Allow"] = allow
            return answer
        return error_response(exc.status, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("[http] %s %s failed", request.method, request.path)
        return error_response(500, "internal error (logged on the server)")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    detection = app.get(DETECTION)
    # A detector that stopped for good (the GPU failed under --require-gpu) is an error, not a slow start.
    error = app.get(DETECTOR_ERROR) or (detection.failed if detection is not None else None)
    # A Triton server that is down or too slow: every frame leaves hidden whole until it answers again.
    # The loop's default executor: a probe may wait a second for Triton, and must not hold up snapshots.
    unavailable = None if detection is None or error else await asyncio.get_running_loop().run_in_executor(
        None, detection.unavailable)
    ready = detection is not None and error is None and unavailable is None
    status = "ok" if ready else ("error" if error else "unavailable" if unavailable else "starting")
    if not auth.authenticated(request):
        # Health checks and load balancers need no more; camera names, addresses, errors and counts are for
        # those who hold the token.
        reason = None if ready else ("the face detector failed" if error else "the face detector is unavailable"
                                     if unavailable else "the face detector is loading")
        return web.json_response({"status": status, "ready": ready, "reason": reason}, status=200 if ready else 503)
    body = {
        "status": status,
        "ready": ready,
        "provider": detection.provider if detection is not None else None,
        "error": error or unavailable,
        # Why the detector moved from the GPU to the CPU at run time, if it did.
        "fallback": detection.fallback if detection is not None else None,
        "sessions": len(app[SESSIONS]),
        "viewers": len(app[VIEWERS]),
        "cameras": {c.name: {k: c.status()[k] for k in ("state", "error", "fps", "last_frame_age_s")}
                    for c in app[CAMERAS]},
        # --shard: which share of the configured cameras this replica runs ({"index": 0, "count": 1}: all).
        "shard": app[CONFIG].shard.as_dict(),
        # For operators and leak tests: these return to their idle values when sessions end (the heap and Python's
        # blocks to within what caches keep).
        "runtime": {"threads": threading.active_count(), "tasks": len(asyncio.all_tasks()),
                    "heap_mib": _mib(heap_in_use()), "python_blocks": sys.getallocatedblocks()},
        # Busy share and mean run time over the last few seconds: what admission by capacity decides on.
        "detector": {"busy": round(app[DETECTOR_LOAD].busy_fraction(), 3),
                     "inference_ms": _ms(app[DETECTOR_LOAD].mean_inference_s())},
    }
    return web.json_response(body, status=200 if ready else 503)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _mib(size: int | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)


async def client_config(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    detection = app.get(DETECTION)
    turn = config.turn.ice_servers() if config.turn is not None else []
    return web.json_response({
        "iceServers": [*(s.as_client_dict() for s in config.ice_servers), *turn],
        "maxSessions": config.max_sessions,
        "maxOfferBytes": config.max_offer_bytes,
        "audio": config.audio,
        "auth": config.token is not None,  # the page shows its log-out button
        "cameraAdmin": management_info(app),  # the page shows its add/edit/remove camera controls
        "provider": detection.provider if detection is not None else None,
        "modes": list(MODES),
        "defaults": LiveSettings().as_dict(),
        # Whether "keep my face" / "hide only these faces" can run here (the identity extra is installed).
        "identity": {"available": app[RECOGNITION].unavailable is None, "reason": app[RECOGNITION].unavailable},
    })


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def _start(app: web.Application) -> None:
    config = app[CONFIG]
    m = app[METRICS]

    def load() -> CenterFace:
        # A Triton server is contacted below, in the background: the service starts (not ready) before it is up.
        return open_detector(config.detector_url, config.device, config.model, config.detector,
                             require_gpu=config.require_gpu, precision=config.precision,
                             timeout_s=config.detect_deadline_s, connect=False, tls=config.detector_tls)

    detector: CenterFace | None = app.get(PRELOADED)
    if detector is None:
        try:
            detector = await asyncio.get_running_loop().run_in_executor(None, load)
        except Exception as exc:
            logger.error("[server] the face detector failed to load: %s", exc)
            app[DETECTOR_ERROR] = str(exc)
            return
    def fell_back(provider: str) -> None:
        m.detector_fallbacks.labels(to=provider).inc()
        if provider != "refused":
            m.provider.clear()
            m.provider.labels(provider=provider).set(1)

    busy = app[DETECTOR_LOAD]

    def on_inference(seconds: float) -> None:  # on the inference thread
        m.inference.observe(seconds)
        busy.observe(seconds)

    # On the CPU one single-threaded inference per core at once (two frames of one stream, or of two): measured
    # live on 2 cores (bench.live_loopback, one 640x480 session, int8) 19.6 frames/s out, against 17.4 with one
    # two-threaded inference at a time. --threads N gives cores / N inferences of N threads each.
    workers: int | None = config.inference_threads  # None on a Triton server: BatchPolicy's requests in flight
    if workers is None and not isinstance(detector, TritonDetector):
        workers = 1 if detector.provider == CUDA else cpu_inference_workers(detector.config.threads)
    batch = BatchPolicy.for_provider(detector.provider, config.batch_size, config.batch_wait_ms, workers)
    busy.workers = batch.workers
    app[DETECTION] = DetectionService(detector, config.detect_deadline_s, on_inference=on_inference,
                                      on_error=m.detector_errors.inc, batch=batch, on_batch=m.batch_size.observe,
                                      require_gpu=config.require_gpu, on_fallback=fell_back)
    m.provider.labels(provider=detector.provider).set(1)
    if isinstance(detector, TritonDetector):  # "triton" until the server says where its model runs

        def connected(provider: str) -> None:
            m.provider.clear()
            m.provider.labels(provider=provider).set(1)

        detector.on_connected = connected
        detector.connect_in_background()  # not ready (and every frame hidden whole) until it has answered
    if any(c.settings.gallery is not None for c in app[CAMERAS]):  # this shard's
        # Started before the cameras: a camera with a gallery must not start without its recognition.
        try:
            await asyncio.get_running_loop().run_in_executor(None, app[RECOGNITION].embedder)
        except RuntimeError as exc:
            logger.error("[server] face recognition cannot start (%s); cameras with a gallery hide every face", exc)
    app[CAMERAS].bind(asyncio.get_running_loop(), app[DETECTION], m.stream_hooks())
    app[JOBS].bind(app[DETECTION])
    logger.info("[server] detector ready on %s (warm-up %.0f ms; %d inference thread(s), up to %d frames per "
                "inference, %.1f ms batch wait)", detector.provider, detector.warmup_ms, batch.workers,
                batch.max_batch, batch.wait_s * 1000)


async def _background(app: web.Application) -> Any:
    expiry = asyncio.ensure_future(expire_loop(app))
    yield
    expiry.cancel()


async def _shutdown(app: web.Application) -> None:
    await asyncio.gather(app[SESSIONS].close_all(), app[VIEWERS].close_all())
    loop = asyncio.get_running_loop()
    await asyncio.gather(loop.run_in_executor(None, app[CAMERAS].stop_all),
                         loop.run_in_executor(None, app[JOBS].shutdown))


async def _cleanup(app: web.Application) -> None:
    detection = app.get(DETECTION)
    if detection is not None:
        detection.close()
    await asyncio.get_running_loop().run_in_executor(None, app[RECOGNITION].stop)
    app[EXECUTOR].shutdown(wait=True, cancel_futures=True)


def create_app(config: ServerConfig | None = None, detector: CenterFace | None = None) -> web.Application:
    """The service; ``detector`` (already loaded and checked) skips loading it at start-up."""
    config = config or ServerConfig()
    # Outermost first: every answer, refusals included, gets the security headers and the JSON error shape.
    # Bodies are read last, once the request may be served at all: a stranger cannot make the server hold one.
    app = web.Application(middlewares=[security_headers, json_errors, hosts.allowed_host, auth.same_origin,
                                       auth.require_token, body_deadline],
                          client_max_size=config.max_offer_bytes)
    app[CONFIG] = config
    hosts.setup(app)
    if detector is not None:
        app[PRELOADED] = detector
    app[METRICS] = ServerMetrics()
    app[DETECTOR_LOAD] = DetectorLoad()
    app[METRICS].watch_runtime(app[DETECTOR_LOAD])
    app[SESSIONS] = SessionRegistry(on_count=app[METRICS].active_sessions.set)
    app[VIEWERS] = SessionRegistry(on_count=app[METRICS].active_viewers.set)
    app[RECOGNITION] = FaceRecognition()
    mine = config.shard.select(config.cameras)  # with --shard, the other replicas run the rest
    if config.shard.sharded:
        logger.info("[server] %s", describe(config.shard, [c.name for c in mine], len(config.cameras)))
    cameras = CameraManager(mine, RtspOptions(read_timeout_s=config.rtsp_timeout_s),
                            fixed=config.fixed_cameras, audit_seconds=config.audit_minutes * 60,
                            recognition=app[RECOGNITION])
    app[CAMERAS] = cameras
    app[METRICS].watch_cameras(cameras)
    # Snapshot encodes and other short blocking work; live frames are hidden on each stream's own thread
    # (LiveScheduler), detection runs on DetectionService's.
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=4, thread_name_prefix="frames")
    app[JOBS] = JobManager(config.jobs_dir, workers=config.job_workers, max_queued=config.max_queued_jobs,
                           ttl_s=config.job_ttl_s)
    app.on_startup.append(_start)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/config", client_config)
    app.router.add_get("/metrics", metrics)
    auth.setup(app)
    add_routes(app)
    add_whep_routes(app)
    add_camera_admin_routes(app)
    add_job_routes(app)
    add_face_routes(app)
    app.router.add_static("/static/", WEB_DIR, show_index=False)
    return app


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host, port=default_port() if args.port is None else args.port, device=args.device,
        detector_url=args.detector,
        detector_tls=TritonTLS.from_paths(args.detector_ca, args.detector_cert, args.detector_key),
        model=args.model, precision=args.precision,
        # One single-threaded inference per core at once (DetectionService's workers), as for files.
        detector=DetectorConfig(detect_size=args.detect_size, threshold=args.threshold, threads=args.threads or 1,
                                spin_wait=False),
        webcam_detect_size=args.webcam_detect_size,
        ice_servers=tuple(parse_ice_server(u) for u in args.ice_server),
        audio=args.audio, max_sessions=args.max_sessions, max_viewers=args.max_viewers,
        max_detector_load=args.max_detector_load,
        cameras=tuple(load_cameras_file(args.config) if args.config else ())
        + tuple(dataclasses.replace(parse_camera_arg(c), always_on=args.always_on) for c in args.camera),
        cameras_file=args.config, fixed_cameras=frozenset(c.partition("=")[0].strip() for c in args.camera),
        shard=args.shard,
        rtsp_timeout_s=args.rtsp_timeout,
        detect_deadline_s=args.detect_deadline, batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms,
        inference_threads=args.inference_threads,
        require_gpu=args.require_gpu, max_upload_mb=args.max_upload_mb,
        max_queued_jobs=args.max_queued_jobs, job_workers=args.job_workers, job_ttl_s=args.job_ttl,
        **({"jobs_dir": args.jobs_dir} if args.jobs_dir else {}),
        tls_cert=args.tls_cert, tls_key=args.tls_key, token=auth.token_from_args(args),
        insecure_no_token=args.insecure_no_token, allowed_hosts=tuple(args.allowed_host), turn=turn_from_args(args),
        audit_minutes=args.audit_minutes,
    )


def turn_from_args(args: argparse.Namespace) -> TurnRelay | None:
    """The TURN relay whose credentials /config signs, from --turn-url and the secret (a file, else a variable)."""
    secret = (read_secret_file(args.turn_secret_file, "--turn-secret-file") if args.turn_secret_file is not None
              else secret_from_env("STREAMER_TURN_SECRET"))
    if not args.turn_url:
        if args.turn_secret_file is not None or args.turn_ttl is not None:
            raise ValueError("--turn-secret-file and --turn-ttl need --turn-url")
        return None  # a secret in the environment alone (compose without the turn profile) means no relay
    if secret is None:
        raise ValueError("--turn-url needs the relay's secret: --turn-secret-file, $STREAMER_TURN_SECRET_FILE or "
                         "$STREAMER_TURN_SECRET")
    ttl = DEFAULT_TTL_S if args.turn_ttl is None else args.turn_ttl
    return TurnRelay(tuple(args.turn_url), secret, check_ttl(ttl))


def check_exposure(config: ServerConfig) -> None:
    """A server others can reach needs a token, unless the operator says loudly that something else guards it."""
    if config.token is not None or binds_loopback_only(config.host):
        return
    if not config.insecure_no_token:
        raise ValueError(
            f"refusing to listen on {config.host or 'every address'} without an access token: anyone who can "
            "reach it could watch every camera, read every upload and start sessions. Give one with "
            "--token-file PATH (or $STREAMER_TOKEN_FILE, $STREAMER_TOKEN), or keep --host 127.0.0.1; "
            "--insecure-no-token serves without one, for a deployment whose own authentication is in front")
    logger.warning("[server] --insecure-no-token: NO ACCESS CONTROL on %s:%d; anyone who can reach it may watch "
                   "every camera, read every upload and start sessions", config.host, config.port)


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    check_exposure(config)
    detector = None
    if args.require_gpu:
        # Refuse to start at all (non-zero exit, clear message) rather than serve on the wrong device.
        detector = open_detector(config.detector_url, config.device, config.model, config.detector, require_gpu=True,
                                 precision=config.precision, timeout_s=config.detect_deadline_s,
                                 tls=config.detector_tls)
        logger.info("[server] --require-gpu: warm-up inference ran on %s", detector.provider)
    ssl_context = None
    if config.tls_cert is not None and config.tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(config.tls_cert, config.tls_key)
    scheme = "https" if ssl_context else "http"
    logger.info("[server] listening on %s://%s:%d (max %d sessions, ICE servers: %s)", scheme, config.host,
                config.port, config.max_sessions,
                json.dumps([s.url for s in config.ice_servers] + list(config.turn.urls if config.turn else ())))
    env_port = os.environ.get(PORT_ENV, "").strip()
    if env_port and env_port != str(config.port):
        logger.warning("[server] listening on port %d but %s=%s: a container's health check probes %s, so set "
                       "the port there rather than with --port", config.port, PORT_ENV, env_port, PORT_ENV)
    if config.token is not None:
        logger.info("[server] access token required on everything but /healthz (log in at /login)")
    web.run_app(create_app(config, detector), host=config.host, port=config.port, ssl_context=ssl_context, print=None,
                shutdown_timeout=5.0)
