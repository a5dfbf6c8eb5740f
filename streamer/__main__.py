"""Command line: ``python -m streamer detect|file|serve``. Thin: parse, build, run."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from models import PRECISION_CHOICES, DetectorConfig, ModelError, ProviderError, open_detector
from models.coverage import parse_detect_size

from .identity.embedding import Embedder
from .identity.gallery import Gallery
from .identity.policy import IdentityMode, IdentityPolicy
from .settings import FAIL_POLICIES, MODES, AnonymizeSettings, HoldSettings
from .shards import Shard, parse_shard, shard_from_env
from .zones import Zones, parse_zones

logger = logging.getLogger("streamer")


def _detector_args(parser: argparse.ArgumentParser) -> None:
    d = DetectorConfig()
    parser.add_argument("--detector", default=None, metavar="triton://HOST:PORT/MODEL",
                        help="run the network on an NVIDIA Triton Inference Server (gRPC) serving the model that "
                             "'python -m models.triton_repo' writes, instead of in this process; frames it does "
                             "not answer in time are hidden whole (default: in process)")
    parser.add_argument("--detector-ca", type=Path, default=None, metavar="PEM",
                        help="speak TLS to the Triton server and check its certificate against this CA (default: "
                             "plain gRPC, for a server on this host or a private network)")
    parser.add_argument("--detector-cert", type=Path, default=None, metavar="PEM",
                        help="a client certificate for a Triton server that asks for one (mutual TLS)")
    parser.add_argument("--detector-key", type=Path, default=None, metavar="PEM", help="its private key")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the detector runs; auto uses CUDA only when it really loads (default: auto)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a CenterFace-format ONNX file instead of the verified default")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="int8: quantized, 1.4-1.7x faster on the CPU with the same measured recall; fp16: for "
                             "CUDA; auto: int8 on the CPU, fp32 on CUDA and for --model files. Built from the "
                             "default weights on first use and cached in ~/.cache/face-streamer or $STREAMER_CACHE "
                             "(default: %(default)s)")
    parser.add_argument("--detect-size", type=parse_detect_size, default=d.detect_size, metavar="full|fast|N",
                        help="how much of each picture the detector sees. full: its own resolution, never shrunk "
                             "(tiles above 2048 px), plus a 2x look at every small face candidate: finds faces "
                             "down to ~8 px, for 1.4-4.5x the time of fast (640x480 to 1080p, BENCHMARKS.md). "
                             "fast: shrunk at most 2x, "
                             "never below 640 px, no small-face pass: most faces under 16 px are missed. N: the "
                             "long side scaled to N px (live streams never enlarge) (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=d.threshold,
                        help="face score threshold; lower finds more faces and more false alarms "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime threads per inference on the CPU. detect: default one per core; file and "
                             "serve: default 1, with one inference per core at once (cores / N with --threads N)")
    parser.add_argument("--require-gpu", action="store_true",
                        help="refuse to run unless the warm-up inference really ran on the CUDA provider")


def _hide_args(parser: argparse.ArgumentParser) -> None:
    a, h = AnonymizeSettings(), HoldSettings()
    parser.add_argument("--mode", choices=MODES, default=a.mode, help="how faces are hidden (default: %(default)s)")
    parser.add_argument("--strength", type=float, default=a.strength,
                        help="0..1: coarser mosaic / stronger blur (default: %(default)s)")
    parser.add_argument("--padding", type=float, default=a.padding,
                        help="scale each face box by this before hiding (default: %(default)s)")
    parser.add_argument("--ellipse", action="store_true", help="hide an ellipse inside each box instead of the box")
    parser.add_argument("--no-scramble", dest="scramble", action="store_false",
                        help="classic mosaic: keep the cells in place (the face's coarse layout stays visible)")
    parser.add_argument("--hold", type=float, default=h.hold_seconds,
                        help="keep hiding a face this many seconds after the detector last saw it "
                             "(default: %(default)s)")
    parser.add_argument("--fail-policy", choices=FAIL_POLICIES, default="hide-frame",
                        help="when detection fails on a frame: hide the whole frame, or widen the masks held "
                             "from recent frames (default: %(default)s)")


def _zones_arg(text: str) -> Zones:
    try:
        if text.startswith("@"):
            text = Path(text[1:]).read_text(encoding="utf-8")
        return parse_zones(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shard_arg(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streamer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="print the faces found in images")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    _detector_args(p)

    p = sub.add_parser("file", help="anonymize an image or a video file, or a batch of them",
                       description="INPUT OUTPUT: one file. INPUT... OUTDIR (several inputs, a folder or a glob): a "
                                   "batch; files already done are skipped, and the exit status is the number that "
                                   "failed.")
    p.add_argument("paths", nargs="+", metavar="INPUT... OUTPUT", help="input files, folders or globs, then the output")
    _detector_args(p)
    _hide_args(p)
    p.add_argument("--zones", type=_zones_arg, default=(), metavar="JSON|@FILE",
                   help="privacy zones, always hidden: polygons of [x, y] points in 0..1 of the frame, as JSON "
                        "(or @FILE holding it), e.g. '[[[0,0],[0.3,0],[0.3,0.2],[0,0.2]]]'")
    p.add_argument("--audit", action="store_true",
                   help="also write the audit trail: one JSON line per frame (time, boxes, scores, held, "
                        "hidden whole) to OUTPUT.audit.jsonl")
    p.add_argument("--boxes-only", action="store_true",
                   help="write only the audit trail, no picture: OUTPUT is the .jsonl file (in a batch, "
                        "OUTDIR/NAME.audit.jsonl)")
    audio = p.add_mutually_exclusive_group()
    audio.add_argument("--keep-audio", dest="keep_audio", action="store_true", default=True,
                       help="keep the sound (the default): copied, or re-encoded as AAC where the container needs")
    audio.add_argument("--drop-audio", dest="keep_audio", action="store_false", help="leave the sound out")
    faces = p.add_mutually_exclusive_group()
    faces.add_argument("--keep-faces", type=Path, metavar="GALLERY",
                       help="leave the faces enrolled in GALLERY visible (python -m streamer enroll writes it); every "
                            "other face, and any face not confidently recognised, is hidden")
    faces.add_argument("--hide-only-faces", type=Path, metavar="GALLERY",
                       help="hide only the faces enrolled in GALLERY, and any face not clearly someone else")
    p.add_argument("--overwrite", action="store_true", help="in a batch, redo files whose output is already there")
    p.add_argument("--crf", type=int, default=20, help="H.264 quality, lower is better (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("enroll", help="add a person's face to a gallery file, from photos",
                       description="Adds the largest face of each photo to NAME in GALLERY (created 0600 when "
                                   "missing). Only the face's embedding is stored, never the photo.")
    p.add_argument("gallery", type=Path, metavar="GALLERY")
    p.add_argument("name", metavar="NAME")
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    _detector_args(p)

    p = sub.add_parser("serve", help="run the web service")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=None,
                   help="port (default: $STREAMER_PORT, else 9002; the container's health check reads the same)")
    p.add_argument("--tls-cert", type=Path, default=None,
                   help="certificate (PEM) for https; browsers give camera access only on https or localhost")
    p.add_argument("--tls-key", type=Path, default=None, help="private key (PEM) for --tls-cert")
    p.add_argument("--token", default=None,
                   help="access token required on everything but /healthz: the page asks for it once (login "
                        "cookie), players and scripts send Authorization: Bearer TOKEN (default: $STREAMER_TOKEN, "
                        "else none; prefer the variable or --token-file, command lines are visible to other users)")
    p.add_argument("--token-file", type=Path, default=None,
                   help="read the access token from this file (a Docker secret, for example; default: "
                        "$STREAMER_TOKEN_FILE)")
    p.add_argument("--insecure-no-token", action="store_true",
                   help="DANGEROUS: listen on a non-loopback address without a token, so anyone who can reach it "
                        "may watch every camera, read every upload and start sessions. Only for a deployment that "
                        "puts its own authentication in front (a reverse proxy, a VPN)")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   default=os.environ.get("STREAMER_ALLOWED_HOSTS", "").replace(",", " ").split(),
                   help="a host name (or address) browsers and players use to reach the server, besides loopback "
                        "and the addresses it listens on; others get 421 (repeatable; default: "
                        "$STREAMER_ALLOWED_HOSTS, space-separated)")
    p.add_argument("--ice-server", action="append", metavar="URL",
                   default=os.environ.get("STREAMER_ICE_SERVERS", "").split(),
                   help="STUN/TURN server for WebRTC, repeatable: stun:HOST[:PORT] or "
                        "turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp] (default: $STREAMER_ICE_SERVERS, "
                        "space-separated, else none; never a public one)")
    p.add_argument("--turn-url", action="append", metavar="URL",
                   default=os.environ.get("STREAMER_TURN_URLS", "").split(),
                   help="a TURN relay that shares --turn-secret-file with the server (coturn's use-auth-secret): "
                        "turn:HOST[:PORT][?transport=udp|tcp], repeatable; browsers get a credential that expires "
                        "after --turn-ttl instead of a lasting password (default: $STREAMER_TURN_URLS)")
    p.add_argument("--turn-secret-file", type=Path, default=None,
                   help="the secret shared with the TURN relay (default: $STREAMER_TURN_SECRET_FILE, else "
                        "$STREAMER_TURN_SECRET)")
    p.add_argument("--turn-ttl", type=float, default=None,
                   help="seconds a TURN credential from /config may start a relay (default: 3600; a relay in use "
                        "keeps working past it)")
    p.add_argument("--audio", choices=("drop", "passthrough"), default="drop",
                   help="what happens to a webcam's audio: dropped, or sent back unchanged (default: %(default)s)")
    p.add_argument("--max-sessions", type=int, default=4,
                   help="live sessions at once; more get 503 with Retry-After (default: %(default)s)")
    p.add_argument("--max-detector-load", type=float, default=0.9,
                   help="refuse (503 with Retry-After) a live session, or a viewer that would start a camera, when "
                        "ceil((detecting streams + 1) / batch) x recent inference time x 10/s / parallel "
                        "inferences would exceed this; past 1 every stream falls below 10 frames per second "
                        "(default: %(default)s; 0: off)")
    p.add_argument("--camera", action="append", default=[], metavar="NAME=URL",
                   help="an RTSP camera to pull and anonymize, repeatable: NAME=rtsp://HOST/PATH")
    p.add_argument("--config", type=Path, default=None,
                   help="cameras from a TOML file ([defaults] and [[camera]] tables; see README)")
    p.add_argument("--always-on", action="store_true",
                   help="pull and anonymize --camera cameras all the time, not only while someone watches")
    p.add_argument("--max-viewers", type=int, default=16,
                   help="camera viewers (WHEP) at once; more get 503 with Retry-After (default: %(default)s)")
    p.add_argument("--max-upload-mb", type=int, default=500,
                   help="largest upload the page may send, in MB; larger ones get 413 (default: %(default)s)")
    p.add_argument("--max-queued-jobs", type=int, default=8,
                   help="upload jobs queued or running at once; more get 429 (default: %(default)s)")
    p.add_argument("--job-workers", type=int, default=1, help="upload jobs run in parallel (default: %(default)s)")
    p.add_argument("--job-ttl", type=float, default=3600.0,
                   help="seconds a finished job's result is kept before it is removed (default: %(default)s)")
    p.add_argument("--jobs-dir", type=Path, default=None,
                   help="where uploads and results are kept while a job lives, in 0700 folders and 0600 files; "
                        "created 0700 if missing, refused if another user owns it, others may write to it, or it is "
                        "a symbolic link (default: $XDG_RUNTIME_DIR/face-streamer-jobs, else a new private folder "
                        "in the system temp directory, removed at shutdown)")
    p.add_argument("--rtsp-timeout", type=float, default=5.0,
                   help="seconds a camera may send nothing before it counts as hung and is reconnected "
                        "(default: %(default)s)")
    p.add_argument("--webcam-detect-size", type=parse_detect_size, default="fast", metavar="full|fast|N",
                   help="--detect-size for browsers' webcams; --detect-size applies to uploads and cameras "
                        "(default: %(default)s: a webcam's faces are large, and full coverage of a 720p frame "
                        "costs ~3x the time on a CPU)")
    p.add_argument("--detect-deadline", type=float, default=1.0,
                   help="seconds a live frame may wait for its detection before it is hidden whole "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="most frames of different streams detected in one inference (default: 32 on CUDA, where "
                        "a batch costs little more than one frame; 1 on the CPU, where it only adds latency)")
    p.add_argument("--inference-threads", type=int, default=None,
                   help="detections run at once: inferences in this process (default: one per core on the CPU, 1 "
                        "on CUDA) or, with --detector triton://, requests in flight to the server (default: 8; "
                        "its dynamic batcher merges them with those of every other replica)")
    p.add_argument("--audit-minutes", type=float, default=10.0,
                   help="each camera and live session keeps this many minutes of its audit trail (what was hidden "
                        "in each frame), for GET /cameras/NAME/audit and /sessions/ID/audit (default: %(default)s)")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="how long a batch waits for the frames of other active streams (default: 3 on CUDA, "
                        "0 on the CPU)")
    p.add_argument("--shard", type=_shard_arg, default=shard_from_env(), metavar="INDEX/COUNT|auto/COUNT",
                   help="run only this replica's share of the cameras (--camera and --config): with COUNT replicas "
                        "given the same cameras, each camera runs in exactly one, chosen by its name; auto takes "
                        "INDEX from the trailing -N of $POD_NAME, else of the host name (a StatefulSet pod). "
                        "With COUNT > 1 cameras cannot be changed through the API (default: $STREAMER_SHARD, "
                        "else 0/1: every camera)")
    _detector_args(p)
    return parser


TRITON_FILE_TIMEOUT_S = 30.0  # files wait for a busy server (a frame that still gets no answer is hidden whole)


def _load(args: argparse.Namespace, threads: int | None = None) -> Any:
    config = DetectorConfig(detect_size=args.detect_size, threshold=args.threshold,
                            threads=args.threads if threads is None else threads)
    from models.triton import TritonTLS

    tls = TritonTLS.from_paths(args.detector_ca, args.detector_cert, args.detector_key)
    return open_detector(args.detector, args.device, args.model, config, require_gpu=args.require_gpu,
                         precision=args.precision, timeout_s=TRITON_FILE_TIMEOUT_S, tls=tls)


def cmd_detect(args: argparse.Namespace) -> int:
    from .offline import InputError, read_image

    detector = _load(args)
    failed = 0
    for path in args.images:
        try:
            image = read_image(path)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        faces = detector.detect(image)
        if args.json:
            record = {
                "image": str(path), "width": image.shape[1], "height": image.shape[0],
                "provider": detector.provider,
                "faces": [{"box": [round(float(v), 1) for v in box], "score": round(float(s), 4)}
                          for box, s in zip(faces.xywh(), faces.scores, strict=True)],
            }
            print(json.dumps(record), flush=True)
        else:
            print(f"{path}: {len(faces)} face(s) ({image.shape[1]}x{image.shape[0]}, {detector.provider})")
            for (x, y, w, h), s in zip(faces.xywh(), faces.scores, strict=True):
                print(f"  x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f} score={s:.2f}")
    return 1 if failed else 0


def cmd_file(args: argparse.Namespace) -> int:
    from .detection_service import TRITON_REQUESTS_IN_FLIGHT, cpu_inference_workers
    from .processor import FrameProcessor

    if len(args.paths) < 2:
        raise ValueError("give INPUT and OUTPUT (or INPUT... OUTDIR)")
    *inputs, output_text = args.paths
    output = Path(output_text)
    settings = AnonymizeSettings(mode=args.mode, strength=args.strength, padding=args.padding,
                                 ellipse=args.ellipse, scramble=args.scramble)
    hold = HoldSettings(hold_seconds=args.hold)
    # Whole files have frames to spare for parallel inferences: one per core here, or a few requests in flight to
    # a Triton server (its dynamic batcher merges them).
    workers = cpu_inference_workers(args.threads) if args.detector is None else TRITON_REQUESTS_IN_FLIGHT
    detector = _load(args, threads=args.threads or 1)

    identity = _file_identity(args)

    def processor_for(source: Path) -> FrameProcessor:
        processor = FrameProcessor(detector, settings, hold, args.fail_policy, stream_id=source.name)
        processor.zones = args.zones
        if identity is not None:
            gallery, embedder, mode = identity
            # A file waits for each face's recognition: every frame gets its decision, none is guessed.
            processor.identity = IdentityPolicy(gallery, embedder, mode, source.name, wait=True)
        return processor

    try:
        return _file_run(args, inputs, output, processor_for, workers, detector.provider)
    finally:
        if identity is not None:
            identity[1].stop()


def _file_identity(args: argparse.Namespace) -> tuple[Gallery, Embedder, IdentityMode] | None:
    path = args.keep_faces or args.hide_only_faces
    if path is None:
        return None
    gallery = Gallery.load(path)
    if not len(gallery):
        raise ValueError(f"{path}: nobody is enrolled")
    return gallery, Embedder(), "keep" if args.keep_faces else "hide-only"


def _file_run(args: argparse.Namespace, inputs: list[str], output: Path, processor_for: Any, workers: int,
              provider: str) -> int:
    from .file_pipeline.one_file import FileOptions, anonymize_file, sidecar_path
    from .offline import Progress, classify_input

    single = Path(inputs[0])
    if len(inputs) > 1 or single.is_dir() or output.is_dir() or (not single.exists() and "*" in inputs[0]):
        return _file_batch(args, inputs, output, processor_for, workers)
    if single.resolve() == output.resolve():
        raise ValueError("OUTPUT must differ from INPUT")
    audit = output if args.boxes_only else sidecar_path(output) if args.audit else None
    options = FileOptions(args.keep_audio, audit, args.boxes_only, args.crf, workers)
    processor = processor_for(single)
    from tqdm import tqdm

    # No bar for a photo: it is one frame, and the bar's thread would keep the decoder's own messages (libpng's)
    # out of the one-line error (offline._native_stderr works only while no other thread runs).
    still = classify_input(single) == "image"
    # tqdm starts its monitor thread even for a disabled bar: none is made at all.
    bar: Any = None if args.no_progress or still else tqdm(unit="frame", desc=single.name, file=sys.stderr,
                                                           dynamic_ncols=True)

    def on_progress(p: Progress) -> None:
        if bar is None:
            return
        if bar.total is None and p.frames_total:
            bar.total = p.frames_total
        bar.update(p.frames_done - bar.n)

    try:
        result = anonymize_file(single, output, processor, options, on_progress=on_progress,
                                cancel=threading.Event())
    finally:
        if bar is not None:
            bar.close()
    stats = processor.stats
    written = result.output or audit
    kept = f", {stats.faces_kept_visible} face(s) left visible by the gallery" if processor.identity else ""
    print(f"{written}: {result.frames} frame(s) {result.width}x{result.height} in {result.seconds:.1f} s "
          f"({result.frames / max(result.seconds, 1e-9):.1f} frames/s), {stats.faces_detected} detection(s), "
          f"{stats.frames_with_held_masks} frame(s) with held masks, {stats.frames_hidden_whole} frame(s) "
          f"hidden whole{kept}, provider {provider}", file=sys.stderr)
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from .identity.enroll import face_embedding
    from .offline import InputError, read_image

    gallery = Gallery.load(args.gallery) if args.gallery.exists() else Gallery()
    detector = _load(args)
    embedder = Embedder()
    added = 0
    try:
        for photo in args.photos:
            try:
                gallery.add(args.name, face_embedding(detector, embedder, read_image(photo)))
                added += 1
            except (InputError, ValueError) as exc:
                print(f"{photo}: {exc}", file=sys.stderr)
    finally:
        embedder.stop()
    if added:
        gallery.save(args.gallery)
    print(f"{args.gallery}: {added} of {len(args.photos)} photo(s) of {args.name} enrolled; "
          f"{len(gallery)} person(s) in the gallery", file=sys.stderr)
    return 0 if added == len(args.photos) else 1


def _file_batch(args: argparse.Namespace, inputs: list[str], out_dir: Path, processor_for: Any,
                workers: int) -> int:
    from .batch import fingerprint, plan, run_batch

    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: a batch writes into a folder, and this is a file")
    items = plan(inputs, out_dir, audit=args.audit, boxes_only=args.boxes_only)
    if not items:
        raise ValueError(f"no photo or video found in {', '.join(inputs)}")
    shaping = {k: v for k, v in vars(args).items() if k not in ("paths", "no_progress", "overwrite", "verbose",
                                                                "threads", "command")}
    gallery = args.keep_faces or args.hide_only_faces
    if gallery is not None:
        shaping["gallery"] = hashlib.sha256(Path(gallery).read_bytes()).hexdigest()
    report = run_batch(items, processor_for, out_dir, settings=fingerprint(shaping), keep_audio=args.keep_audio,
                       crf=args.crf, detect_workers=workers, overwrite=args.overwrite,
                       progress=not args.no_progress)
    print(f"{report.done} done, {report.skipped} skipped (already done), {report.failed} failed", file=sys.stderr)
    return report.exit_status


def cmd_serve(args: argparse.Namespace) -> int:
    from .malloc import limit_arenas
    from .server.app import run

    limit_arenas()  # before the service starts its threads
    run(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from models.triton import TritonUnavailable

    from .offline import Cancelled, InputError

    handlers = {"detect": cmd_detect, "file": cmd_file, "enroll": cmd_enroll, "serve": cmd_serve}
    try:
        return handlers[args.command](args)
    except (InputError, ModelError, ProviderError, ValueError, TritonUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
