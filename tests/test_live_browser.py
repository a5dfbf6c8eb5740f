"""The web page end to end in a real browser: Debian's Chromium, driven by Playwright, inside the run's network
namespace, with a real clip as its fake camera. It presses Start, and checks the video the page shows (read back
through a canvas): the face hidden, the rest of the picture intact, and the statistics panel moving; and, with a
ground-truth clip as the camera, that switching the resolution mid-stream lets no face out.

Chromium is /usr/bin/chromium (never a downloaded browser); it runs through a small wrapper that starts it with
``ip netns exec``, so the page, its peer connection and everything else it sends stay inside the namespace."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import require_testdata
from test_live_leaks import assert_no_leak
from webrtc_support import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    ServerProcess,
    chromium_wrapper,
    http,
    make_y4m,
    truth_y4m,
)

from models.boxes import iou_matrix
from testkit.framecode import CENTRED_STRIP, read
from testkit.judges import DetectorJudge, IdentityJudge, Judge, PixelJudge, judge
from testkit.netns import NamespaceLoop, NetNamespace
from testkit.truth import entering_faces
from testkit.wire import as_seen, as_sent

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300),
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")]

CLIP = ("videos", "liveportrait_driving_d3.mp4")  # one talking head; letterboxed into 640x480
SIZE = (640, 480)
STATS = ("stat-fps-out", "stat-fps-in", "stat-dropped", "stat-processing-ms", "stat-inference-ms",
         "stat-hidden-whole", "stat-provider", "stat-rtt", "stat-resolution", "stat-frames-decoded")
MOVING = ("stat-fps-out", "stat-fps-in", "stat-processing-ms", "stat-inference-ms", "stat-rtt",
          "stat-frames-decoded")
GRAB_JS = """() => {
  const v = document.querySelector('#output');
  if (!v || !v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext('2d').drawImage(v, 0, 0);
  return {width: c.width, height: c.height, png: c.toDataURL('image/png').split(',')[1], time: v.currentTime};
}"""


class Y4m:
    """The fake camera's frames: small grey copies of every frame for matching, full frames on demand."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        self.small: list[np.ndarray[Any, Any]] = []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                gray = frame.to_ndarray(format="gray")
                self.small.append(cv2.resize(gray, (160, 120), interpolation=cv2.INTER_AREA).astype(np.float32))
        # the letterboxed picture inside the 640x480 frame (non-black columns of the first frame)
        first = self.frame(0)
        cols = np.flatnonzero(first.max(axis=(0, 2)) > 24)
        self.picture_x = (int(cols[0]), int(cols[-1]) + 1)

    def frame(self, index: int) -> np.ndarray[Any, Any]:
        import av

        with av.open(str(self.path)) as container:
            for n, frame in enumerate(container.decode(video=0)):
                if n == index:
                    return np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
        raise IndexError(index)

    def closest(self, image_bgr: np.ndarray[Any, Any], ignore: np.ndarray[Any, Any]) -> tuple[int, float]:
        """The frame most like ``image_bgr`` outside the box ``ignore`` (x1, y1, x2, y2 in 640x480), and its
        mean absolute difference there (grey levels)."""
        gray = cv2.resize(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY), (160, 120),
                          interpolation=cv2.INTER_AREA).astype(np.float32)
        mask = np.ones((120, 160), bool)
        x1, y1, x2, y2 = (int(v / 4) for v in ignore)
        mask[max(0, y1):y2, max(0, x1):x2] = False
        scores = [float(np.abs(gray - ref)[mask].mean()) for ref in self.small]
        best = int(np.argmin(scores))
        return best, scores[best]


def padded(box: np.ndarray[Any, Any], scale: float, width: int, height: int) -> np.ndarray[Any, Any]:
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * scale, (y2 - y1) * scale
    return np.array([max(0, cx - w / 2), max(0, cy - h / 2), min(width, cx + w / 2), min(height, cy + h / 2)])


@pytest.fixture(scope="module")
def y4m(tmp_path_factory: pytest.TempPathFactory) -> Y4m:
    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    make_y4m(require_testdata(*CLIP), path, seconds=5.0, size=SIZE)
    return Y4m(path)


@pytest.fixture(scope="module")
def page_server(netns: NetNamespace, ns_loop: NamespaceLoop, artifacts_dir: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(netns, ns_loop, log_path=artifacts_dir / "browser-server.log").start()
    try:
        yield srv
    finally:
        srv.stop()


def flat_share(gray: np.ndarray[Any, Any], std: float = 4.0) -> float:
    """The share of 8x8 patches whose grey values vary by less than ``std``."""
    h, w = gray.shape[0] // 8 * 8, gray.shape[1] // 8 * 8
    patches = gray[:h, :w].reshape(h // 8, 8, w // 8, 8).std(axis=(1, 3))
    return float((patches < std).mean())


def read_stats(page: Any) -> dict[str, str]:
    values = {}
    for stat in STATS:
        value = page.eval_on_selector(f"#{stat}", "e => e.dataset.value || e.textContent.trim()")
        values[stat] = str(value)
    return values


def grab(page: Any) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
    shot = page.evaluate(GRAB_JS)
    assert shot is not None, "#output shows no video"
    image = cv2.imdecode(np.frombuffer(base64.b64decode(shot["png"]), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    if image.shape[:2] != (SIZE[1], SIZE[0]):  # Chromium may send a lower resolution under load
        image = cv2.resize(image, SIZE, interpolation=cv2.INTER_LINEAR)
    return np.asarray(image, np.uint8), shot


def test_page_goes_live_and_shows_only_the_hidden_face(netns: NetNamespace, ns_loop: NamespaceLoop,
                                                       page_server: ServerProcess, y4m: Y4m, detector: Any,
                                                       artifacts_dir: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")

    base = page_server.base_url
    wrapper = chromium_wrapper(netns, tmp_path)
    args = [*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={y4m.path}",
            # http://10.77.0.1 is no secure context; getUserMedia needs one
            f"--unsafely-treat-insecure-origin-as-secure={base}"]
    console: list[str] = []
    page_errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(wrapper), args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(base + "/")
            assert page.evaluate("window.isSecureContext") is True
            page.click("#start")
            try:
                page.wait_for_selector("body[data-state=live]", timeout=30_000)
            except Exception:
                page.screenshot(path=str(artifacts_dir / "browser-not-live.png"), full_page=True)
                error = page.eval_on_selector("#error", "e => e.textContent")
                raise AssertionError(f"the page did not go live; #error: {error!r}; console: {console[-10:]}"
                                     f"; server log: {page_server.log_tail(1500)}") from None
            page.wait_for_function("() => document.querySelector('#output').videoWidth > 0", timeout=15_000)
            time.sleep(3.0)  # let the stats panel fill and the first detections settle

            stats_before = read_stats(page)
            grabs = []
            for _ in range(3):
                grabs.append(grab(page))
                time.sleep(0.7)
            time.sleep(1.0)
            stats_after = read_stats(page)
            page.screenshot(path=str(artifacts_dir / "browser-live.png"), full_page=True)

            page.click("#stop")
            page.wait_for_selector("body:not([data-state=live])", timeout=10_000)
            state_after_stop = page.eval_on_selector("body", "b => b.dataset.state")
        finally:
            browser.close()
    (artifacts_dir / "browser-console.log").write_text("\n".join(console))

    # --- the page went live and stopped cleanly, with no script errors
    assert not page_errors, page_errors
    # Stop deletes the session before closing its connection, so the DELETE never meets a session already gone (404)
    assert not [line for line in console if line.startswith("error:")], console
    assert state_after_stop in ("idle", "stopped"), state_after_stop
    health = ns_loop.run(_wait_no_sessions(base))
    assert health["sessions"] == 0, f"session still open after Stop: {health}"

    # --- what the page shows: the face hidden, the rest of the picture as the camera saw it
    px0, px1 = y4m.picture_x
    report = [f"stats before: {stats_before}", f"stats after:  {stats_after}"]
    # the face of the camera frame each grab shows: the detector on the camera's first frame gives the region to
    # leave out while finding the closest camera frame (the head barely moves), then on that frame itself
    first_faces = detector.detect(y4m.frame(0)).boxes
    assert len(first_faces) >= 1, "the detector finds no face in the fake camera's first frame"
    for n, (image, shot) in enumerate(grabs):
        cv2.imwrite(str(artifacts_dir / f"browser-output-{n}.png"), image)
        index, bg_diff = y4m.closest(image, padded(first_faces[0], 1.6, *SIZE))
        source = y4m.frame(index)
        faces = detector.detect(source).boxes
        assert len(faces) >= 1, f"no face in camera frame {index}"
        face = faces[0]
        x1, y1, x2, y2 = (int(v) for v in padded(face, 0.6, *SIZE))  # inner part of the face
        gray_out = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        gray_src = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY).astype(np.float32)
        face_diff = float(np.abs(gray_out - gray_src)[y1:y2, x1:x2].mean())
        # the picture outside the padded face box (the hidden area is 1.3x the face; 1.6x leaves a margin),
        # letterbox bars excluded
        keep = np.zeros(gray_out.shape, bool)
        keep[:, px0:px1] = True
        bx1, by1, bx2, by2 = (int(v) for v in padded(face, 1.6, *SIZE))
        keep[by1:by2, bx1:bx2] = False
        assert keep.sum() > 5000, "too little background to compare"
        rest_diff = float(np.abs(gray_out - gray_src)[keep].mean())
        # blocky: the hidden face is made of large uniform cells, so most 8x8 patches are nearly flat
        flat, src_flat = flat_share(gray_out[y1:y2, x1:x2]), flat_share(gray_src[y1:y2, x1:x2])
        detail = (f"grab {n} ({shot['width']}x{shot['height']}, camera frame {index}, matched at {bg_diff:.1f}): "
                  f"face region differs by "
                  f"{face_diff:.1f} grey levels, the rest by {rest_diff:.1f}; {flat:.0%} of its 8x8 patches flat "
                  f"(camera: {src_flat:.0%})")
        report.append(detail)
        (artifacts_dir / "browser-report.txt").write_text("\n".join(report) + "\n")
        found = detector.detect(image)
        if len(found):
            overlap = iou_matrix(faces, found.boxes)
            assert overlap.max() < 0.3, (f"the face is visible in the page: {detail} "
                                         f"(IoU {overlap.max():.2f}, score {found.scores.max():.2f})")
        assert face_diff >= 20, "the face region looks like the camera's: " + detail
        assert rest_diff <= 12, "the picture outside the face does not match the camera's: " + detail
        assert face_diff >= 3 * rest_diff, detail
        assert flat >= 0.5 and flat >= src_flat + 0.1, "the face region is not a mosaic: " + detail

    # --- the statistics panel is filled in and moving
    for stat in STATS:
        assert stats_after[stat] not in ("", "—"), f"#{stat} is empty: {stats_after}"
    assert stats_after["stat-provider"] == "CPUExecutionProvider", stats_after
    decoded = (int(float(stats_before["stat-frames-decoded"])), int(float(stats_after["stat-frames-decoded"])))
    assert decoded[1] > decoded[0] + 5, f"#stat-frames-decoded went {decoded[0]} -> {decoded[1]} in ~3 s"
    changed = [s for s in MOVING if stats_before[s] != stats_after[s]]
    assert len(changed) >= 3, f"stats barely move: before {stats_before}, after {stats_after}"


async def _wait_no_sessions(base: str, limit_s: float = 10) -> dict[str, Any]:
    import asyncio

    deadline = time.monotonic() + limit_s
    while True:
        answer = await http("GET", base + "/healthz")
        body: dict[str, Any] = answer.json()
        if body.get("sessions") == 0 or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.2)


def test_page_switching_resolution_mid_stream_shows_no_face(netns: NetNamespace, ns_loop: NamespaceLoop,
                                                            page_server: ServerProcess, detector: Any,
                                                            artifacts_dir: Path, tmp_path: Path) -> None:
    """The page's resolution control switches 640x480 -> 1280x720 -> 640x480 while live (and Chromium adapts the
    size on its own under load). The fake camera plays a 1280x720 virtual camera over the annotated photos, faces
    entering through the edges; every picture the page shows, whatever its size, is judged against the ground
    truth by pixels, identity and the detector. Zero leaks."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    require_testdata("images")
    clip = entering_faces(4.0, size=(1280, 720 - CENTRED_STRIP.height), seed=4)  # sent as 1280x720, strip on top
    camera = tmp_path / "truth.y4m"
    truth_y4m(clip, camera)
    base = page_server.base_url
    args = [*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={camera}",
            f"--unsafely-treat-insecure-origin-as-secure={base}"]
    grabs: list[np.ndarray[Any, Any]] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_wrapper(netns, tmp_path)), args=args,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/")
            page.click("#start")
            page.wait_for_selector("body[data-state=live]", timeout=30_000)
            page.wait_for_function("() => document.querySelector('#output').videoWidth > 0", timeout=15_000)
            for resolution in ("640x480", "1280x720", "640x480"):
                if page.input_value("#resolution") != resolution:
                    page.select_option("#resolution", resolution)
                for _ in range(12):
                    shot = page.evaluate(GRAB_JS)
                    assert shot is not None, "#output shows no video"
                    image = cv2.imdecode(np.frombuffer(base64.b64decode(shot["png"]), np.uint8), cv2.IMREAD_COLOR)
                    grabs.append(np.asarray(image, np.uint8))
                    time.sleep(0.25)
            page.click("#stop")
        finally:
            browser.close()
    sizes = {(g.shape[1], g.shape[0]) for g in grabs}
    assert len(sizes) >= 2, f"the page showed only {sizes}: the resolution never changed"
    sent = as_sent(clip, CENTRED_STRIP)
    indices = [read(np.asarray(cv2.cvtColor(g, cv2.COLOR_BGR2GRAY), np.uint8), *sent.frame(0).size, CENTRED_STRIP,
                    crop=True) for g in grabs]
    readable = [(i, g) for i, g in zip(indices, grabs, strict=True) if i is not None]
    assert len(readable) >= 0.8 * len(grabs), f"only {len(readable)} of {len(grabs)} grabs show a readable index"
    judges: list[Judge] = [PixelJudge(), IdentityJudge(clip.reference), DetectorJudge(detector)]
    pairs = ((as_seen(sent.frame(i % len(sent)), (g.shape[1], g.shape[0])), g) for i, g in readable)
    report = judge(pairs, judges, identity_every=2)
    assert_no_leak(report, artifacts_dir, "browser-switch", min_frames=25, min_faces=30, min_checks=10)


@contextlib.contextmanager
def camera_page(netns: NetNamespace, tmp_path: Path, base: str, y4m: Y4m) -> Iterator[tuple[Any, list[str]]]:
    """Chromium with the clip as its camera, on the page, and the script errors it reports."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    args = [*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={y4m.path}",
            f"--unsafely-treat-insecure-origin-as-secure={base}"]
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_wrapper(netns, tmp_path)), args=args,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            yield page, errors
        finally:
            browser.close()


ZONE_CORNERS = [(0.55, 0.5), (0.85, 0.5), (0.85, 0.9), (0.55, 0.9)]


def zone_region_solid(image: np.ndarray[Any, Any]) -> bool:
    """The inner part of the drawn zone is one dark grey (SOLID_BGR after VP8) in a grabbed frame."""
    h, w = image.shape[:2]
    inner = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[int(0.56 * h):int(0.88 * h), int(0.57 * w):int(0.83 * w)]
    return bool(inner.std() < 4 and inner.mean() < 50)


def test_page_draws_a_privacy_zone_over_the_live_video_and_the_server_hides_it(
        netns: NetNamespace, ns_loop: NamespaceLoop, page_server: ServerProcess, y4m: Y4m, artifacts_dir: Path,
        tmp_path: Path) -> None:
    base = page_server.base_url
    with camera_page(netns, tmp_path, base, y4m) as (page, page_errors):
        page.click("#start")
        page.wait_for_selector("body[data-state=live]", timeout=30_000)
        page.wait_for_function("() => document.querySelector('#output').videoWidth > 0", timeout=15_000)
        before = [grab(page)[0] for _ in range(3)]

        page.click("#zone-draw")
        page.wait_for_selector("#zone-overlay[data-drawing=true]")
        box = page.locator("#zone-overlay").bounding_box()
        assert box is not None
        for fx, fy in ZONE_CORNERS:
            page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.keyboard.press("Enter")
        page.wait_for_selector("#zone-count[data-count='1']")
        assert page.locator("#zone-overlay polygon.zone").count() == 1
        # From the first frame that shows the zone hidden, every later one must (judged on the picture).
        deadline = time.monotonic() + 30
        while not zone_region_solid(grab(page)[0]):
            assert time.monotonic() < deadline, "the drawn zone never showed hidden in the video"
            page.wait_for_timeout(100)
        after = []
        for _ in range(8):
            page.wait_for_timeout(150)
            after.append(grab(page)[0])
        cv2.imwrite(str(artifacts_dir / "browser-zone.png"), after[-1])
        page.select_option("#lang", "ko")
        korean = page.locator("#zone-draw").inner_text()
        page.click("#zone-clear")
        page.wait_for_selector("#zone-count[data-count='0']")
        deadline = time.monotonic() + 30
        while zone_region_solid(grab(page)[0]):
            assert time.monotonic() < deadline, "the zone stayed hidden after Clear zones"
            page.wait_for_timeout(100)
        page.click("#stop")
        page.wait_for_selector("body:not([data-state=live])", timeout=10_000)
    assert not page_errors, page_errors
    assert not any(zone_region_solid(image) for image in before), "the camera's own picture looks like a zone"
    assert all(zone_region_solid(image) for image in after), "a frame after the zone appeared shows the region"
    assert korean == "영역 그리기", korean
    assert ns_loop.run(_wait_no_sessions(base))["sessions"] == 0


def face_shown(image: np.ndarray[Any, Any], y4m: Y4m, detector: Any, first_face: np.ndarray[Any, Any]) -> bool:
    """Whether the page shows the camera's face unhidden: its region correlates with the camera frame it shows."""
    index, _ = y4m.closest(image, padded(first_face, 1.6, *SIZE))
    source = y4m.frame(index)
    faces = detector.detect(source).boxes
    if not len(faces):
        return False
    x1, y1, x2, y2 = (int(v) for v in padded(faces[0], 0.8, *SIZE))
    got = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[y1:y2, x1:x2].astype(float).ravel()
    want = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)[y1:y2, x1:x2].astype(float).ravel()
    return bool(got.std() > 1 and np.corrcoef(got, want)[0, 1] > 0.95)


def test_page_keeps_my_face_visible_on_request_and_hides_it_again(
        netns: NetNamespace, ns_loop: NamespaceLoop, page_server: ServerProcess, y4m: Y4m, detector: Any,
        artifacts_dir: Path, tmp_path: Path) -> None:
    base = page_server.base_url
    first_face = detector.detect(y4m.frame(0)).boxes[0]

    def wait_for(shown: bool, what: str) -> None:
        deadline = time.monotonic() + 30
        while face_shown(grab(page)[0], y4m, detector, first_face) != shown:
            assert time.monotonic() < deadline, what
            page.wait_for_timeout(100)

    with camera_page(netns, tmp_path, base, y4m) as (page, page_errors):
        page.wait_for_selector("#faces[data-available=true]")
        assert page.is_disabled("#face-keep-me")  # enrolment belongs to a live session
        page.click("#start")
        page.wait_for_selector("body[data-state=live]", timeout=30_000)
        page.wait_for_function("() => document.querySelector('#output').videoWidth > 0", timeout=15_000)
        before = [face_shown(grab(page)[0], y4m, detector, first_face) for _ in range(3)]
        page.click("#face-keep-me")
        page.wait_for_selector("#face-list[data-count='1']", timeout=20_000)
        assert page.input_value("#identity") == "keep"
        wait_for(True, "my face never came back unhidden after Keep my face")
        cv2.imwrite(str(artifacts_dir / "browser-face-kept.png"), grab(page)[0])
        page.click("#face-list li[data-name='me'] .face-remove")
        page.wait_for_selector("#face-list[data-count='0']", state="attached")
        wait_for(False, "my face stayed unhidden after it was removed")
        page.click("#stop")
        page.wait_for_selector("body:not([data-state=live])", timeout=10_000)
    assert not page_errors, page_errors
    assert not any(before), "the face was shown before it was enrolled"
