"""Upload jobs over HTTP: POST /jobs (multipart, streamed to disk), progress (GET and Server-Sent Events),
the result, and DELETE to cancel and remove."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import zlib
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp_sse import EventSourceResponse

from ..jobs import TERMINAL, Job, JobOptions, QueueFull
from ..offline import HEAD_BYTES, InputError, input_kind
from ..settings import AnonymizeSettings
from ..zones import parse_zones
from .state import CONFIG, DETECTION, JOBS, error_response

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
UPLOAD_CHUNK_TIMEOUT_S = 30.0  # the longest an upload may send nothing (aiohttp itself would wait for ever)
# ... and the least it must send in each such window: a few bytes now and then would otherwise hold a queue slot
# and a connection for ever (128 kbit/s; a 500 MB upload at that rate takes 9 hours).
UPLOAD_MIN_BYTES_PER_S = 16 * 1024
SSE_INTERVAL_S = 0.25


FIELDS = ("mode", "strength", "zones", "audio", "audit")
FIELD_LIMIT = {"zones": 16 * 1024}  # bytes of a form field; the rest are a word or a number
SHORT_FIELD = 64
FLAGS = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}


def _options(fields: dict[str, str]) -> JobOptions:
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}; send file, {', '.join(FIELDS)}")
    try:
        strength = float(fields.get("strength", "0.5"))
    except ValueError as exc:
        raise ValueError("strength must be a number") from exc
    settings = AnonymizeSettings(mode=fields.get("mode", "mosaic"), strength=strength)  # type: ignore[arg-type]
    audio = fields.get("audio", "keep")
    if audio not in ("keep", "drop"):
        raise ValueError("audio must be keep or drop")
    audit = FLAGS.get(fields.get("audit", "false").lower())
    if audit is None:
        raise ValueError("audit must be true or false")
    return JobOptions(settings, parse_zones(fields.get("zones") or None), audio == "keep", audit)


async def post_job(request: web.Request) -> web.Response:
    app = request.app
    config, jobs = app[CONFIG], app[JOBS]
    if app.get(DETECTION) is None:
        return error_response(503, "the face detector is not ready yet", retry_after=5)
    limit = config.max_upload_mb * 1024 * 1024
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        return error_response(413, f"the upload is larger than the {config.max_upload_mb} MB limit")
    if not request.content_type.startswith("multipart/"):
        return error_response(415, "send the file as multipart/form-data with a field named 'file'")
    try:
        reader = await request.multipart()
    except ValueError as exc:  # no boundary, or one that is not ASCII or too long
        return error_response(400, f"the multipart body cannot be read: {exc}")
    fields: dict[str, str] = {}
    job: Job | None = None
    loop = asyncio.get_running_loop()
    try:
        # aiohttp has no read timeout: a client that trickles its upload must not hold a connection and a job
        # slot for ever. Each part header and chunk must come within UPLOAD_CHUNK_TIMEOUT_S.
        async with asyncio.timeout(UPLOAD_CHUNK_TIMEOUT_S) as deadline:
            while (part := await reader.next()) is not None:
                deadline.reschedule(loop.time() + UPLOAD_CHUNK_TIMEOUT_S)
                if not isinstance(part, BodyPartReader):
                    raise ValueError("nested multipart bodies are not supported")
                if part.name == "file":
                    if job is not None:
                        raise ValueError("send one file per job")
                    job = jobs.new_job(part.filename or "", _options(fields))
                    size = 0
                    head = b""
                    window_start, window_size = loop.time(), 0
                    with job.create_input() as out:
                        while chunk := await part.read_chunk(CHUNK):
                            if len(head) < HEAD_BYTES:
                                # A TIFF, GIF, ... is refused before the rest is read; the job classifies the whole
                                # file again by the same rule (input_kind), also when it is shorter than this.
                                head += chunk[:HEAD_BYTES - len(head)]
                                if len(head) == HEAD_BYTES:
                                    job.kind = input_kind(head, job.name + job.suffix)
                            now = loop.time()
                            deadline.reschedule(now + UPLOAD_CHUNK_TIMEOUT_S)
                            size += len(chunk)
                            window_size += len(chunk)
                            if now - window_start >= UPLOAD_CHUNK_TIMEOUT_S:
                                if window_size < UPLOAD_MIN_BYTES_PER_S * (now - window_start):
                                    raise TimeoutError  # a trickle: answered like silence
                                window_start, window_size = now, 0
                            if size > limit:
                                jobs.fail_upload(job, "too large")
                                jobs.cancel(job)
                                return error_response(413, f"the upload is larger than the {config.max_upload_mb} MB "
                                                           "limit")
                            # Disk writes off the event loop: a slow disk must not stall live sessions.
                            await asyncio.get_running_loop().run_in_executor(None, out.write, chunk)
                elif part.name in FIELDS:
                    fields[part.name] = await _field_text(part, FIELD_LIMIT.get(part.name, SHORT_FIELD))
                else:
                    raise ValueError(f"unknown field {part.name!r}; send file, {', '.join(FIELDS)}")
            if job is None:
                raise ValueError("no file in the upload (multipart field 'file')")
            job.options = _options(fields)  # fields may come before or after the file
    except TimeoutError:
        if job is not None:
            jobs.cancel(job)
        logger.warning("[job %s] upload from %s stalled (under the minimum rate for %.0f s); closing",
                       job.id if job else "-", request.remote,
                       UPLOAD_CHUNK_TIMEOUT_S)
        response = error_response(408, f"the upload stalled: less than {UPLOAD_MIN_BYTES_PER_S // 1024} KiB/s "
                                       f"over {UPLOAD_CHUNK_TIMEOUT_S:.0f} s")
        response.force_close()
        return response
    except QueueFull as exc:
        return error_response(429, f"too many jobs waiting: {exc}; try again later", retry_after=30)
    except InputError as exc:  # before ValueError, which it is
        if job is not None:
            jobs.cancel(job)
        return error_response(415, str(exc))
    except (ValueError, LookupError, HttpProcessingError) as exc:
        # LookupError: a part declared a charset that does not exist; HttpProcessingError: a part's headers are
        # malformed (aiohttp's message is "400, message: ...": say it plainly).
        if isinstance(exc, HttpProcessingError):
            exc = ValueError(f"a part of the multipart body has malformed headers ({exc.message})")
        if job is not None:
            jobs.cancel(job)
        return error_response(400, str(exc))
    except OSError as exc:
        if job is not None:
            jobs.cancel(job)
        if exc.errno != errno.ENOSPC:
            raise
        logger.error("[job %s] upload refused: the jobs directory is full", job.id if job else "-")
        return error_response(507, "no space left on the server's disk for this upload; try a smaller file or "
                                   "again later")
    except BaseException:
        # Whatever else went wrong (the client went away, the body was cut off, a bug), a job registered for this
        # upload must go with its files: left queued, it would never run, never expire and keep a queue slot.
        if job is not None:
            jobs.cancel(job)
        raise
    jobs.start(job)
    logger.info("[job %s] accepted: %s%s, %s", job.id, job.name, job.suffix, job.kind)
    return web.json_response(job.as_dict(), status=202, headers={"Location": f"/jobs/{job.id}"})


async def _field_text(part: BodyPartReader, limit: int) -> str:
    """A form field's text, refused (not cut) when longer than ``limit`` bytes: a cut zone list is another one."""
    data = bytearray()
    while chunk := await part.read_chunk(4096):
        data += chunk
        if len(data) > limit:
            raise ValueError(f"field {part.name!r} is longer than {limit} bytes")
    try:
        return bytes(part.decode(bytes(data))).decode(part.get_charset(default="utf-8"))
    except (RuntimeError, zlib.error, UnicodeDecodeError) as exc:  # an unknown or corrupt Content-Encoding
        raise ValueError(f"field {part.name!r} cannot be decoded: {exc}") from exc


def _job(request: web.Request) -> Job:
    job = request.app[JOBS].get(request.match_info["job"])
    if job is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such job (finished jobs expire)"}),
                               content_type="application/json")
    return job


async def list_jobs(request: web.Request) -> web.Response:
    return web.json_response({"jobs": [job.as_dict() for job in request.app[JOBS].all()]})


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(_job(request).as_dict())


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: one `progress` event per change, then the terminal state, then the stream ends."""
    job = _job(request)
    events = EventSourceResponse()
    events.headers["Cache-Control"] = "no-store"  # a private job's progress: stronger than the library's no-cache
    await events.prepare(request)
    async with events:
        seen = -1
        while events.is_connected():
            if job.version != seen:
                seen = job.version
                await events.send(json.dumps(job.as_dict()), event="progress")
            if job.state in TERMINAL or request.app[JOBS].get(job.id) is None:
                break
            await asyncio.sleep(SSE_INTERVAL_S)
    return events


async def job_result(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    if job.state != "done" or job.output is None or not job.output.exists():
        return error_response(409, f"the job is {job.state}; the result is available once it is done")
    filename = f"{job.name}-anonymized{job.output.suffix}"
    # RFC 6266/5987: an ASCII name for old clients, the real (percent-encoded, so header-safe) one for the rest.
    utf8 = quote(f"{job.title or job.name}-anonymized{job.output.suffix}", safe="")
    disposition = f"attachment; filename=\"{filename}\"; filename*=UTF-8''{utf8}"
    return web.FileResponse(job.output, headers={"Content-Disposition": disposition,
                                                 "Cache-Control": "no-store"})


async def job_audit(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    if job.state != "done" or job.audit is None or not job.audit.exists():
        return error_response(409 if job.options.audit else 404,
                              f"the job is {job.state}; its audit trail is available once it is done"
                              if job.options.audit else "this job was not asked for an audit trail (audit=true)")
    filename = f"{job.name}-audit.jsonl"
    return web.FileResponse(job.audit, headers={"Content-Disposition": f"attachment; filename=\"{filename}\"",
                                                "Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})


async def delete_job(request: web.Request) -> web.Response:
    request.app[JOBS].cancel(_job(request))
    return web.Response(status=204)


async def expire_loop(app: web.Application) -> None:
    while True:
        await asyncio.sleep(min(30.0, max(1.0, app[JOBS].ttl_s / 4)))
        gone = app[JOBS].expire()
        if gone:
            logger.info("[jobs] %d finished job(s) expired", gone)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/jobs", post_job)
    app.router.add_get("/jobs", list_jobs)
    app.router.add_get("/jobs/{job}", get_job)
    app.router.add_get("/jobs/{job}/events", job_events)
    app.router.add_get("/jobs/{job}/result", job_result)
    app.router.add_get("/jobs/{job}/audit", job_audit)
    app.router.add_delete("/jobs/{job}", delete_job)
