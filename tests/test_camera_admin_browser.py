"""The Cameras view's controls for adding, editing and removing cameras, in Debian's Chromium driven by Playwright
against `python -m streamer serve --token-file ... --config cameras.toml` on 127.0.0.1. The cameras point at a
closed port and are on demand, so nothing is pulled: this is about the page and the API together (the pictures are
tests/test_camera_admin.py's). A second server without a token shows why the controls are absent. Screenshots in
English and Korean go to test-artifacts/.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_jobs import Service

from streamer.camera_config import load_cameras_file

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--no-first-run")
TOKEN = "page-camera-admin-token"
PASSWORD = "hunter2-pw"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300),
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")]


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def card(page: Any, name: str) -> Any:
    return page.locator(f'#camera-list li[data-camera="{name}"]')


def server_camera(page: Any, name: str) -> Any:
    return page.evaluate(f"fetch('/cameras/{name}').then((r) => r.json())")


def test_cameras_are_added_edited_and_removed_from_the_page(tmp_path: Path, closed_port: int,
                                                            artifacts_dir: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    expect = sync_api.expect  # waits on the page's DOM without eval (the page's CSP forbids it)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cameras = tmp_path / "cameras.toml"
    cameras.write_text(f'[[camera]]\nname = "lobby"\nurl = "rtsp://127.0.0.1:{closed_port}/lobby"\n')
    srv = Service(tmp_path / "jobs", ("--token-file", str(token_file), "--config", str(cameras),
                                      "--camera", f"fixed=rtsp://127.0.0.1:{closed_port}/fixed"))
    srv.start(artifacts_dir / "camera-admin-browser-server.log")
    open_srv: Service | None = None
    page_errors: list[str] = []
    console: list[str] = []
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS),
                                                 headless=True)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
                page = context.new_page()
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: page_errors.append(str(e)))
                page.goto(srv.base + "/login?next=/%23cameras")
                page.fill("#token", TOKEN)
                page.click("#login-submit")
                page.wait_for_selector("#view-cameras:not([hidden])", timeout=10_000)

                # Controls shown: the server has a token and a cameras file; the --camera one is not editable.
                page.wait_for_selector("#camera-manage:not([hidden])", timeout=10_000)
                assert "cameras file" in page.inner_text("#camera-manage-note")
                assert page.is_hidden("#camera-manage-off")
                card(page, "lobby").locator("button.edit:not([hidden])").wait_for(timeout=10_000)
                assert card(page, "fixed").locator("button.edit").is_hidden()
                assert card(page, "fixed").locator("button.remove").is_hidden()

                # Add: a wrong scheme is refused with the server's reason, inline, without the password.
                page.click("#camera-add")
                assert page.get_attribute("#camera-form", "data-mode") == "add"
                page.click("#camera-form-save")
                page.wait_for_selector("#camera-form-error:not([hidden])")
                assert "name" in page.inner_text("#camera-form-error")
                page.fill("#camera-form-name", "door")
                page.fill("#camera-form-url", f"http://admin:{PASSWORD}@127.0.0.1:{closed_port}/door")
                page.click("#camera-form-save")
                expect(page.locator("#camera-form-error")).to_contain_text("rtsp://")
                error = page.inner_text("#camera-form-error")
                assert "400" in error and PASSWORD not in error, error
                page.fill("#camera-form-url", f"rtsp://admin:{PASSWORD}@127.0.0.1:{closed_port}/door")
                page.select_option("#camera-form-mode", "blur")
                page.select_option("#camera-form-transport", "udp")
                page.click("#camera-form-save")
                page.wait_for_selector("#camera-form", state="hidden")
                door = card(page, "door")
                door.wait_for(timeout=10_000)
                expect(door.locator(".camera-details")).to_contain_text("UDP")
                status = server_camera(page, "door")
                assert (status["mode"], status["transport"], status["always_on"]) == ("blur", "udp", False)
                assert status["url"] == f"rtsp://admin:***@127.0.0.1:{closed_port}/door"

                # The same name again: 409, said in the form.
                page.click("#camera-add")
                page.fill("#camera-form-name", "door")
                page.fill("#camera-form-url", f"rtsp://127.0.0.1:{closed_port}/other")
                page.click("#camera-form-save")
                expect(page.locator("#camera-form-error")).to_contain_text("409")
                page.click("#camera-form-cancel")
                assert page.is_hidden("#camera-form")

                # Edit: the name is fixed, the URL field starts empty (the current one, redacted, is in the hint),
                # and leaving it empty keeps the camera's URL with its password.
                door.locator("button.edit").click()
                assert page.get_attribute("#camera-form", "data-mode") == "edit"
                assert page.get_attribute("#camera-form", "data-camera") == "door"
                assert page.eval_on_selector("#camera-form-name", "(e) => e.readOnly") is True
                assert page.input_value("#camera-form-url") == ""
                assert "admin:***@" in page.inner_text("#camera-form-url-hint")
                assert page.input_value("#camera-form-mode") == "blur"
                page.select_option("#camera-form-mode", "solid")
                page.check("#camera-form-always-on")
                page.fill("#camera-form-zones", "[[[0, 0], [0.3, 0], [0.3, 0.4")  # cut short: not JSON
                page.click("#camera-form-save")
                expect(page.locator("#camera-form-error")).to_contain_text("must be JSON")
                page.fill("#camera-form-zones", "[[[0, 0], [0.3, 0], [0.3, 0.4], [0, 0.4]]]")
                restream = f"rtmp://127.0.0.1:{closed_port}/live/stream-key-123"
                page.fill("#camera-form-restream", restream)
                page.screenshot(path=str(artifacts_dir / "camera-admin-edit-en.png"), full_page=True)
                page.click("#camera-form-save")
                page.wait_for_selector("#camera-form", state="hidden")
                expect(door.locator(".camera-details")).to_contain_text("always on")
                status = server_camera(page, "door")
                assert (status["mode"], status["transport"], status["always_on"]) == ("solid", "udp", True)
                assert status["settings"]["zones"] == [[[0, 0], [0.3, 0], [0.3, 0.4], [0, 0.4]]]
                assert status["settings"]["restream"] == f"rtmp://127.0.0.1:{closed_port}/***"  # the key hidden
                saved = {c.name: c for c in load_cameras_file(cameras)}
                assert sorted(saved) == ["door", "lobby"]
                assert saved["door"].url == f"rtsp://admin:{PASSWORD}@127.0.0.1:{closed_port}/door"
                assert saved["door"].restream == restream and saved["door"].zones
                # Edited again without touching the restream field: the target, key and all, is kept.
                door.locator("button.edit").click()
                assert f"127.0.0.1:{closed_port}/***" in page.inner_text("#camera-form-restream-hint")
                page.select_option("#camera-form-mode", "blur")
                page.click("#camera-form-save")
                page.wait_for_selector("#camera-form", state="hidden")
                saved = {c.name: c for c in load_cameras_file(cameras)}
                assert saved["door"].restream == restream and saved["door"].anonymize.mode == "blur"
                assert server_camera(page, "door")["mode"] == "blur"

                # Korean, then Remove after the inline confirmation.
                page.select_option("#lang", "ko")
                assert page.inner_text("#camera-add") == "카메라 추가"
                assert door.locator("button.remove").inner_text() == "삭제"
                door.locator("button.remove").click()
                confirm = door.locator(".camera-confirm")
                confirm.wait_for(timeout=5_000)
                assert "door" in confirm.inner_text() and "삭제할까요" in confirm.inner_text()
                page.screenshot(path=str(artifacts_dir / "camera-admin-remove-ko.png"), full_page=True)
                door.locator("button.cancel-remove").click()
                assert confirm.is_hidden()
                door.locator("button.remove").click()
                door.locator("button.confirm-remove").click()
                door.wait_for(state="detached", timeout=10_000)
                assert [c.name for c in load_cameras_file(cameras)] == ["lobby"]
                page.select_option("#lang", "en")

                # A server without a token: no controls, and the page says why.
                open_srv = Service(tmp_path / "jobs-open").start(artifacts_dir / "camera-admin-browser-open.log")
                page.goto(open_srv.base + "/#cameras")
                page.wait_for_selector("#camera-manage-off:not([hidden])", timeout=10_000)
                assert "access token" in page.inner_text("#camera-manage-off")
                assert page.is_hidden("#camera-manage")
            finally:
                browser.close()
    finally:
        srv.stop()
        if open_srv is not None:
            open_srv.stop()
    (artifacts_dir / "camera-admin-browser-console.log").write_text("\n".join(console))
    assert not page_errors, page_errors
    log = (artifacts_dir / "camera-admin-browser-server.log").read_text(errors="replace")
    assert "[camera door] added through the API" in log and "[camera door] removed through the API" in log
    assert PASSWORD not in log and TOKEN not in log
