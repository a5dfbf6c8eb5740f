"""Load and soak: sessions joining and leaving leave nothing behind, and admission by capacity refuses the session
the shared detector cannot serve (503 + Retry-After) while the sessions already served keep their frame rate.

The bounded soak runs in the default test run: 8 sessions for three minutes in four rounds, each round ending
with every session closed, so that the idle server's heap in use is sampled four times and must not climb (a leak
of a MiB a minute shows there; resident memory swings by tens of MiB with the allocator, and its slope says
something only over the long soak). The long one runs only when ``STREAMER_SOAK_MINUTES`` is set (e.g.
``STREAMER_SOAK_MINUTES=10 pytest tests/test_soak.py -k long``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_testdata
from webrtc_support import HttpAnswer, LiveClient, ServerProcess, free_port, http, load_clip

from streamer.server.capacity import DetectorLoad, refusal
from testkit.netns import SERVER_ADDR, NamespaceLoop, NetNamespace
from testkit.soak import LIFE_S, Soak, SoakResult, idle_heap_slope, leak_problems, load_soak_source, rss_slope

# The admission test's clip: a portrait, one face the detector finds on the compressed stream. (The soak plays a
# ground-truth clip, testkit.soak.load_soak_source: faces of 40-70 px on the annotated photos, each one judged.)
CLIP = ("videos", "liveportrait_source_s18.mp4")
SOAK_SESSIONS = 8
SOAK_S = 180.0
SOAK_ROUNDS = 4
SOAK_LIFE_S = (10.0, 30.0)  # short lives so that each round sees every slot leave and rejoin
# About 18 sessions a minute come and go: a leak of about 115 KiB each (one 320x240 frame) exceeds this. Checked by
# leaking 200 KiB at each session's close: the idle heap then grew 3.55 MiB/min and the test failed.
# Measured without a leak: the idle heap stays within +-1 MiB (slope about 0; noise of the fit about 0.5 MiB/min).
HEAP_SLOPE_MIB_PER_MIN = 2.0
RSS_GROWTH_MIB = 60.0  # idle RSS after the soak against idle RSS before it (allocator arenas may keep some)


# ------------------------------------------------------------------------------------------ the load rule


def test_predicted_load_grows_with_streams_and_inference_time() -> None:
    load = DetectorLoad(window_s=5.0)
    assert load.predicted_load(3) is None  # idle: nothing to predict from, admit
    assert refusal(load, 3, 0.9) is None
    for i in range(10):
        load.observe(0.030, now=100.0 + i * 0.1)
    # 30 ms per detection: with 2 streams plus one more, each gets a frame every 90 ms of the 100 ms budget
    # (10 frames per second).
    assert load.predicted_load(1, now=101.0) == pytest.approx(0.6)
    assert load.predicted_load(2, now=101.0) == pytest.approx(0.9)
    assert load.predicted_load(2, batch=32, now=101.0) == pytest.approx(0.3)  # one batched run serves all
    assert load.busy_fraction(now=101.0) == pytest.approx(0.06)
    assert load.predicted_load(2, now=200.0) is None  # the window has moved on


def test_refusal_says_why_and_zero_turns_it_off() -> None:
    load = DetectorLoad()
    load.observe(0.040)
    why = refusal(load, 3, 0.9)
    assert why is not None and "capacity" in why and "--max-detector-load" in why and "10 frames" in why, why
    assert refusal(load, 3, 0.0) is None
    assert refusal(load, 1, 0.9) is None  # 2 x 40 ms of 100 ms


# --------------------------------------------------------------------------------- admission by capacity


class SlowSession:
    """The real ONNX session with a fixed delay added to every run (every detect path calls session.run): a
    detector that serves one stream at more than 10 frames per second, and two not."""

    def __init__(self, session: Any, delay_s: float) -> None:
        self._session = session
        self.delay_s = delay_s

    def run(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay_s)
        return self._session.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def received_fps(client: LiveClient, since: float, until: float) -> float:
    return sum(1 for r in client.received if since <= r.arrived < until) / (until - since)


async def test_a_session_the_detector_cannot_serve_is_refused_and_the_others_keep_their_rate(
        ns_loop: NamespaceLoop) -> None:
    from aiohttp import web

    from models import load_detector
    from streamer.server.app import create_app
    from streamer.server.config import ServerConfig

    clip = load_clip(require_testdata(*CLIP), 2.0, max_width=320)
    detector = load_detector("cpu")
    # 120 ms per detection: one stream, with a frame in each of the detector's inference threads, gets over 10
    # frames per second; with a second stream, every stream would get fewer (predicted load >= 1.0 on 1 or 2
    # cores).
    detector.sessions.wrap(lambda real: SlowSession(real, 0.120))

    async def scenario() -> tuple[HttpAnswer, int, float, float, HttpAnswer, dict[str, Any]]:
        port = await free_port()
        app = create_app(ServerConfig(host=SERVER_ADDR, port=port, device="cpu", max_sessions=4,
                                      max_detector_load=0.9), detector=detector)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, SERVER_ADDR, port).start()
        base = f"http://{SERVER_ADDR}:{port}"
        try:
            async with LiveClient(base, clip, keep_frames=False, loop_forever=True) as first:
                assert (await first.connect()).status == 200
                await first.wait_connected()
                await first.wait_first_frame()
                await asyncio.sleep(3)  # its detections fill the load window
                t0 = time.monotonic()
                await asyncio.sleep(3)
                before = received_fps(first, t0, time.monotonic())
                async with LiveClient(base, clip, keep_frames=False) as second:
                    refused = await second.connect()
                open_sessions = (await http("GET", base + "/healthz")).json()["sessions"]
                t1 = time.monotonic()
                await asyncio.sleep(3)
                after = received_fps(first, t1, time.monotonic())
            # Once the load is gone (the window empties), the next session is admitted again.
            await asyncio.sleep(6)
            health = (await http("GET", base + "/healthz")).json()
            async with LiveClient(base, clip, keep_frames=False, loop_forever=True) as third:
                again = await third.connect()
            return refused, open_sessions, before, after, again, health
        finally:
            await runner.cleanup()

    refused, open_sessions, before, after, again, health = await ns_loop.call(scenario(), limit_s=120)
    assert refused.status == 503, refused.text
    assert refused.headers.get("Retry-After") == "5", refused.headers
    assert "capacity" in refused.json()["error"], refused.text
    # The refused stream never reached the detector: the first one is still the only stream, and still served.
    # (Its frame rate is the detector's and this machine's business, measured in bench, not asserted here.)
    assert open_sessions == 1, f"{open_sessions} sessions open after the refusal"
    assert before > 0 and after > 0, f"the first session got {before:.1f} fps before, {after:.1f} fps after"
    assert again.status == 200, f"still refused once idle: {again.text} (healthz {health})"


# ------------------------------------------------------------------------------------------------- the soak


@pytest.fixture(scope="module")
def soak_server(netns: NetNamespace, ns_loop: NamespaceLoop, artifacts_dir: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(netns, ns_loop, ["--max-sessions", str(SOAK_SESSIONS)], artifacts_dir / "soak-server.log")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def check_soak(result: SoakResult) -> None:
    problems = leak_problems(result)
    assert not problems, "after every session closed: " + "; ".join(problems) + f"\n{result.samples}"
    failed = [r for r in result.records if r.error]
    assert not failed, f"{len(failed)} session(s) failed, e.g. {failed[0]}"
    done = result.records
    assert len(done) > SOAK_SESSIONS, f"only {len(done)} sessions: the slots never left and rejoined"
    starved = [r for r in done if r.frames_back == 0]
    assert not starved, f"{len(starved)} admitted session(s) got no frame back, e.g. {starved[0]}"
    leaked = sum(r.face_frames_leaked for r in done)
    frames = sum(r.frames_back for r in done)
    assert sum(r.face_frames_checked for r in done) > 100, "too few faces checked to say anything"
    assert leaked == 0, f"{leaked} face-frame(s) of {frames} frames came back unchanged: {result.leaks}"
    # A sample of the frames, after the run, by all three judges (pixels, identity, the product's detector).
    judged = result.judged
    assert judged is not None, "no frame kept for the judges"
    checks = {name: tally["checked"] for name, tally in judged["leak_report"]["judges"].items()}
    assert min(checks.values()) >= 20, f"a judge checked too few faces of the sample: {checks}"
    assert judged["face_frames_leaked"]["total"] == 0, f"faces back in the sample: {judged['leak_report']}"
    base = next(s for s in result.samples if s.phase == "baseline")
    end = next(s for s in result.samples if s.phase == "end")
    assert end.rss_mib <= base.rss_mib + RSS_GROWTH_MIB, f"idle RSS {base.rss_mib} -> {end.rss_mib} MiB"


@pytest.mark.timeout(SOAK_S + 100 * SOAK_ROUNDS + 60)
async def test_sessions_joining_and_leaving_leave_nothing_behind(soak_server: ServerProcess,
                                                                 ns_loop: NamespaceLoop) -> None:
    require_testdata("images")
    source = load_soak_source(320, 240, seconds=4.0)
    soak = Soak(soak_server.base_url, soak_server.pid, source, SOAK_SESSIONS, SOAK_S, life_s=SOAK_LIFE_S,
                interval_s=5.0, settle_s=5.0, rounds=SOAK_ROUNDS)
    result = await ns_loop.call(soak.run(), limit_s=SOAK_S + 100 * SOAK_ROUNDS)
    check_soak(result)
    idle = [(s.t_s, s.heap_mib, s.rss_mib) for s in result.samples if s.phase in ("baseline", "idle", "end")]
    slope = idle_heap_slope(result)
    assert slope is not None, f"too few idle samples with the heap in use: {idle}"
    assert slope <= HEAP_SLOPE_MIB_PER_MIN, (f"the idle server's heap in use grows {slope:.2f} MiB/min over the "
                                             f"rounds (t s, heap MiB, RSS MiB): {idle}")


@pytest.mark.slow
@pytest.mark.timeout(0)
@pytest.mark.skipif(not os.environ.get("STREAMER_SOAK_MINUTES"), reason="set STREAMER_SOAK_MINUTES to run it")
async def test_long_soak(soak_server: ServerProcess, ns_loop: NamespaceLoop) -> None:
    minutes = float(os.environ.get("STREAMER_SOAK_MINUTES", "10"))
    require_testdata("images")
    source = load_soak_source(320, 240)
    soak = Soak(soak_server.base_url, soak_server.pid, source, SOAK_SESSIONS, minutes * 60, life_s=LIFE_S)
    result = await ns_loop.call(soak.run(), limit_s=minutes * 60 + 300)
    check_soak(result)
    slope = rss_slope(result)
    assert slope is not None and slope <= 1.0, f"RSS grows {slope} MiB/min over the second half"
