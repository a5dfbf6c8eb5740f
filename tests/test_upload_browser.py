"""The Upload view end to end in a real browser: Debian's Chromium driven by Playwright against
`python -m streamer serve` on 127.0.0.1 (plain HTTP on loopback; no camera, no WebRTC). Real photos and a short real
clip go in through the file picker and the drop zone; every job must reach `done` with its progress at 100%, and the
files the page downloads must hide every face (and keep the clip's frames). A file that is no video fails with the
server's reason, Cancel stops a running video, Remove deletes finished jobs, and the service's jobs directory ends
empty. Screenshots of the view in English and Korean are kept in test-artifacts/.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import require_testdata
from test_jobs import Service, assert_clean, assert_photo_hidden, assert_video_hidden, short_clip, video_info

from models.centerface import CenterFaceDetector

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--no-first-run")

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300),
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")]

PHOTO = ("images", "2008_002470.jpg")  # picked with the file picker
DROPPED_PHOTO = ("images", "2008_001009.jpg")  # dropped onto the drop zone
CLIP_SOURCE = ("videos", "liveportrait_driving_d3.mp4")  # one talking head; its first 60 frames are the short clip
CLIP_FRAMES = 60
JOB_LIMIT_MS = 120_000

# Drops files on #drop-zone the way a user's drag does: dragenter, then drop, with a DataTransfer holding File
# objects made from the given bytes (base64).
DATA_TRANSFER_JS = """(files) => {
  const dt = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
    dt.items.add(new File([bytes], f.name, { type: f.type }));
  }
  return dt;
}"""
JOBS_JS = """() => [...document.querySelectorAll('#job-list li')].map((li) => ({
  file: li.dataset.file, id: li.dataset.jobId || null, state: li.dataset.state,
  value: li.querySelector('progress').hasAttribute('value') ? li.querySelector('progress').value : null,
  max: li.querySelector('progress').max, status: li.querySelector('.job-status').textContent,
  error: li.querySelector('.job-error').hidden ? '' : li.querySelector('.job-error').textContent,
}))"""


@pytest.fixture(scope="module")
def upload_service(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> Iterator[Service]:
    jobs_dir = tmp_path_factory.mktemp("jobs-browser") / "jobs"
    srv = Service(jobs_dir, ("--job-ttl", "600")).start(artifacts_dir / "upload-browser-server.log")
    try:
        yield srv
    finally:
        srv.stop()
    assert sorted(jobs_dir.iterdir()) == [], "the instance directory outlived the service"


def li(page: Any, name: str) -> Any:
    return page.locator(f'#job-list li[data-file="{name}"]')


def wait_state(page: Any, name: str, state: str, timeout_ms: int = JOB_LIMIT_MS) -> None:
    try:
        page.wait_for_selector(f'#job-list li[data-file="{name}"][data-state="{state}"]', timeout=timeout_ms)
    except Exception:
        raise AssertionError(f"{name} did not reach {state}: {page.evaluate(JOBS_JS)}") from None


def download(page: Any, name: str, folder: Path) -> Path:
    with page.expect_download() as info:
        li(page, name).locator("a.job-download").click()
    dl = info.value
    path = folder / str(dl.suggested_filename)
    dl.save_as(str(path))
    return path


def test_upload_view_anonymizes_photos_and_a_clip(upload_service: Service, detector: CenterFaceDetector,
                                                  artifacts_dir: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    photo, dropped = require_testdata(*PHOTO), require_testdata(*DROPPED_PHOTO)
    clip = short_clip(require_testdata(*CLIP_SOURCE), tmp_path / "talking-head.mp4", frames=CLIP_FRAMES)
    long_clip = require_testdata(*CLIP_SOURCE)  # 354 frames: cancelled while it runs
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    console: list[str] = []
    page_errors: list[str] = []
    seen: dict[str, set[str]] = {}

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS),
                                             headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                                          locale="en-US")
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: page_errors.append(str(e)))

            # --- /#upload opens the view
            page.goto(upload_service.base + "/#upload")
            page.wait_for_selector("#view-upload:not([hidden])", timeout=10_000)
            assert page.evaluate("document.body.dataset.view") == "upload"
            assert page.get_attribute("#tab-upload", "aria-selected") == "true"
            assert page.is_hidden("#view-webcam") and page.is_hidden("#view-cameras")
            assert page.evaluate("location.hash") == "#upload"

            # --- a photo and a clip through the file picker, settings from the view's controls
            page.select_option("#upload-mode", "blur")  # not the defaults: they must reach the server
            page.eval_on_selector("#upload-strength", """(e) => {
                e.value = "0.7";
                e.dispatchEvent(new Event("input", { bubbles: true }));
            }""")
            assert page.inner_text("#upload-strength-value") == "0.70"
            assert page.is_checked("#upload-audio") and not page.is_checked("#upload-audit")  # the defaults
            page.uncheck("#upload-audio")
            page.check("#upload-audit")
            page.set_input_files("#upload-input", [str(photo), str(clip)])

            # --- a photo and a text file named .mp4 dropped onto the drop zone
            files = [{"name": dropped.name, "type": "image/jpeg", "data": base64.b64encode(dropped.read_bytes())
                      .decode()},
                     {"name": "notes.mp4", "type": "video/mp4",
                      "data": base64.b64encode(b"this is a text file, not a video\n" * 50).decode()}]
            transfer = page.evaluate_handle(DATA_TRANSFER_JS, files)
            page.dispatch_event("#drop-zone", "dragenter", {"dataTransfer": transfer})
            assert page.get_attribute("#drop-zone", "data-dragging") == "true"
            page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
            assert page.get_attribute("#drop-zone", "data-dragging") == "false"
            assert page.locator("#job-list li").count() == 4

            # --- follow the jobs to their end, noting the states each one went through
            deadline = time.monotonic() + JOB_LIMIT_MS / 1000
            while True:
                jobs = page.evaluate(JOBS_JS)
                for job in jobs:
                    seen.setdefault(job["file"], set()).add(job["state"])
                    if job["state"] == "running" and job["file"] == clip.name:
                        seen[clip.name].add(job["status"])
                if all(job["state"] in ("done", "failed", "cancelled") for job in jobs):
                    break
                assert time.monotonic() < deadline, f"jobs did not end: {jobs}"
                time.sleep(0.1)
            by_file = {job["file"]: job for job in jobs}
            for name in (photo.name, clip.name, dropped.name):
                wait_state(page, name, "done", 5_000)
                job = by_file[name]
                assert job["id"], job
                assert (job["value"], job["max"]) == (100, 100), job
                assert job["status"].startswith("100%"), job
                assert li(page, name).get_attribute("data-job-id") == job["id"]
                assert li(page, name).locator("a.job-download").get_attribute("href") == f"/jobs/{job['id']}/result"
            assert by_file[clip.name]["status"].endswith(f"{CLIP_FRAMES} frames"), by_file[clip.name]
            assert "running" in seen[clip.name], seen[clip.name]
            assert any(re.fullmatch(rf"\d+% · \d+ of {CLIP_FRAMES} frames( · .*)?", s) for s in seen[clip.name]), \
                seen[clip.name]
            for name in (photo.name, clip.name):
                assert upload_service.job(by_file[name]["id"]).json()["settings"] == {
                    "mode": "blur", "strength": 0.7, "zones": [], "audio": "drop", "audit": True}
                audit_link = li(page, name).locator("a.job-audit")
                assert audit_link.get_attribute("href") == f"/jobs/{by_file[name]['id']}/audit"
                trail = upload_service.request("GET", f"/jobs/{by_file[name]['id']}/audit")
                frames = CLIP_FRAMES if name == clip.name else 1
                assert trail.status == 200 and len(trail.body.splitlines()) == frames, trail.status
            assert li(page, photo.name).locator(".job-meta").inner_text().endswith("Blur, strength 0.70")
            bad = by_file["notes.mp4"]
            assert bad["state"] == "failed" and "not a readable video" in bad["error"], bad
            assert "The server could not anonymize this file" in bad["error"], bad
            assert li(page, "notes.mp4").locator("a.job-download").is_hidden()
            assert li(page, "notes.mp4").locator("button.job-cancel").inner_text() == "Remove"

            # --- previews of the results
            page.wait_for_selector(f'li[data-file="{photo.name}"] .job-preview img', timeout=5_000)
            deadline = time.monotonic() + 15
            while not page.evaluate(f"""() => {{
                const img = document.querySelector('li[data-file="{photo.name}"] .job-preview img');
                const v = document.querySelector('li[data-file="{clip.name}"] .job-preview video');
                const note = document.querySelector('li[data-file="{clip.name}"] .job-preview-note');
                return img.complete && img.naturalWidth > 0 && ((v && v.readyState >= 2) || !note.hidden);
            }}"""):
                assert time.monotonic() < deadline, "the previews did not load"
                time.sleep(0.1)
            time.sleep(0.5)  # the video's first frame
            page.screenshot(path=str(artifacts_dir / "upload-view-en.png"), full_page=True)

            # --- downloads, as the user saves them
            saved = {name: download(page, name, downloads) for name in (photo.name, dropped.name, clip.name)}
            assert saved[photo.name].name == "2008_002470-anonymized.jpg"
            assert saved[clip.name].name == "talking-head-anonymized.mp4"

            # --- Cancel stops a running video; Remove then takes its card away
            page.set_input_files("#upload-input", str(long_clip))
            wait_state(page, long_clip.name, "running")
            deadline = time.monotonic() + 30
            while not re.match(r"\d+% · \d+ of 354 frames · [\d.]+ frames/s · about \d+ (s|min)",
                               status := li(page, long_clip.name).locator(".job-status").inner_text()):
                assert time.monotonic() < deadline, status
                time.sleep(0.1)
            assert float(li(page, long_clip.name).locator("progress").get_attribute("data-percent") or 0) > 0
            long_id = li(page, long_clip.name).get_attribute("data-job-id")
            assert page.get_attribute("#tab-upload-count", "hidden") is None  # one file in progress
            assert li(page, long_clip.name).locator("button.job-cancel").inner_text() == "Cancel"
            page.screenshot(path=str(artifacts_dir / "upload-view-running-en.png"), full_page=True)
            li(page, long_clip.name).locator("button.job-cancel").click()
            wait_state(page, long_clip.name, "cancelled", 10_000)
            assert upload_service.job(long_id).status == 404
            li(page, long_clip.name).locator("button.job-cancel").click()
            page.wait_for_selector(f'#job-list li[data-file="{long_clip.name}"]', state="detached", timeout=5_000)
            assert page.get_attribute("#tab-upload-count", "hidden") is not None

            # --- Korean
            page.select_option("#lang", "ko")
            assert page.inner_text("#tab-upload").strip() == "업로드"
            assert li(page, photo.name).locator(".job-state").inner_text() == "완료"
            assert li(page, photo.name).locator("a.job-download").inner_text() == "내려받기"
            assert "서버가 이 파일을 익명화하지 못했습니다" in li(page, "notes.mp4").locator(".job-error").inner_text()
            page.screenshot(path=str(artifacts_dir / "upload-view-ko.png"), full_page=True)
            page.select_option("#lang", "en")

            # --- Remove every card: finished jobs are deleted on the server too
            for name in (photo.name, clip.name, dropped.name, "notes.mp4"):
                li(page, name).locator("button.job-cancel").click()
                page.wait_for_selector(f'#job-list li[data-file="{name}"]', state="detached", timeout=5_000)
            assert page.is_visible("#upload-empty")
            deadline = time.monotonic() + 5
            while upload_service.jobs() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert upload_service.jobs() == []
        finally:
            browser.close()
    (artifacts_dir / "upload-browser-console.log").write_text("\n".join(console) + "\n")

    assert not page_errors, page_errors
    assert not [line for line in console if line.startswith("error:")], console
    assert_clean(upload_service)

    # --- what was downloaded: every face hidden; the clip keeps its frames, rate and duration
    for source in (photo, dropped):
        image = cv2.imread(str(saved[source.name]), cv2.IMREAD_COLOR)
        assert image is not None, f"{saved[source.name]} is not an image"
        assert_photo_hidden(source, np.asarray(image, np.uint8), detector)
    assert video_info(saved[clip.name])[0] == CLIP_FRAMES
    assert_video_hidden(clip, saved[clip.name], detector, every=15)


@pytest.fixture(scope="module")
def tight_upload_service(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> Iterator[Service]:
    jobs_dir = tmp_path_factory.mktemp("jobs-browser-tight") / "jobs"
    srv = Service(jobs_dir, ("--max-upload-mb", "1", "--max-queued-jobs", "1", "--job-ttl", "600"))
    srv.start(artifacts_dir / "upload-browser-tight-server.log")
    try:
        yield srv
    finally:
        srv.stop()
    assert sorted(jobs_dir.iterdir()) == [], "the instance directory outlived the service"


def test_upload_view_explains_refused_uploads(tight_upload_service: Service, artifacts_dir: Path,
                                              tmp_path: Path) -> None:
    """413 (over --max-upload-mb), 429 (the queue is full, with Retry-After and a Retry button that works once
    there is room) and a file type the service does not read, each said in words on the file's card."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    photo = require_testdata(*PHOTO)
    busy_clip = require_testdata("videos", "face_recognition_short_hamilton_clip.mp4")  # 613 KB, 275 frames
    big = tmp_path / "big.mp4"
    big.write_bytes(np.random.default_rng(0).integers(0, 256, 2 * 1024 * 1024, dtype=np.uint8).tobytes())
    text = tmp_path / "readme.txt"
    text.write_text("not a photo\n")
    page_errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS),
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(tight_upload_service.base + "/")
            page.click("#tab-upload")
            page.wait_for_selector("#view-upload:not([hidden])", timeout=10_000)
            assert page.evaluate("location.hash") == "#upload"

            # --- over the size limit
            page.set_input_files("#upload-input", str(big))
            wait_state(page, big.name, "failed", 30_000)
            error = li(page, big.name).locator(".job-error").inner_text()
            assert error.startswith("The file is too large for this server (413)") and "1 MB" in error, error
            assert li(page, big.name).get_attribute("data-job-id") is None
            assert li(page, big.name).locator("button.job-retry").is_hidden()

            # --- not a type the service reads: refused in the page, nothing sent
            page.set_input_files("#upload-input", str(text))
            wait_state(page, text.name, "failed", 5_000)
            error = li(page, text.name).locator(".job-error").inner_text()
            assert "is not a photo or video this service reads" in error, error

            # --- the queue is full while a video runs; Retry once it has been cancelled
            page.set_input_files("#upload-input", str(busy_clip))
            wait_state(page, busy_clip.name, "running")
            page.set_input_files("#upload-input", str(photo))
            wait_state(page, photo.name, "failed", 30_000)
            error = li(page, photo.name).locator(".job-error").inner_text()
            assert error.startswith("The server is busy with other files (429, queue full)"), error
            assert re.search(r"Wait \d+ s \(Retry-After\), then press Retry", error), error
            retry = li(page, photo.name).locator("button.job-retry")
            assert retry.is_visible() and retry.inner_text() == "Retry"
            page.screenshot(path=str(artifacts_dir / "upload-view-refused-en.png"), full_page=True)
            page.select_option("#lang", "ko")
            assert "대기열이 가득 찼습니다 (429)" in li(page, photo.name).locator(".job-error").inner_text()
            assert "(413)" in li(page, big.name).locator(".job-error").inner_text()
            page.screenshot(path=str(artifacts_dir / "upload-view-refused-ko.png"), full_page=True)
            page.select_option("#lang", "en")
            li(page, busy_clip.name).locator("button.job-cancel").click()
            wait_state(page, busy_clip.name, "cancelled", 10_000)
            retry.click()
            wait_state(page, photo.name, "done")
            assert li(page, photo.name).locator(".job-error").is_hidden()
            for name in (big.name, text.name, busy_clip.name, photo.name):
                li(page, name).locator("button.job-cancel").click()
                page.wait_for_selector(f'#job-list li[data-file="{name}"]', state="detached", timeout=5_000)
        finally:
            browser.close()
    assert not page_errors, page_errors
    assert_clean(tight_upload_service)
