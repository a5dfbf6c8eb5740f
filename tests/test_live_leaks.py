"""No face leaves a live session, judged against ground truth by judges that are not the product's detector alone.

An aiortc client sends clips with a face box on every frame (testkit.truth: a virtual camera panning and zooming
over the annotated photos, hard cuts between different people, faces entering through the edges, a browser-like
resolution switch, the annotated OTB "Girl" sequence) to ``python -m streamer serve`` in the run's network
namespace. Every frame that comes back is matched to the frame that was sent (testkit.wire) and every visible true
face in it is judged (testkit.judges):

- pixels: the face's luma still correlates >= 0.6 with the source: it came back unchanged;
- identity: dlib's face recognition model re-identifies the person (distance < 0.6; every 12th face, every 3rd
  of the one-face OTB clip, and every risky one, since dlib costs ~120 ms a face);
- detector: the product's own CenterFace finds a face there.

Zero leaked face-frames by every judge, on every test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_testdata
from webrtc_support import LiveClient, ServerProcess, SessionResult, http

from testkit.echo import EchoServer
from testkit.framecode import STRIP
from testkit.judges import DetectorJudge, IdentityJudge, Judge, LeakReport, PixelJudge, eligible, judge
from testkit.netns import NamespaceLoop, NetNamespace
from testkit.truth import Image, TruthClip, TruthFrame, entering_faces, hard_cuts, otb_girl, switching_sizes
from testkit.wire import TruthTrack, returned_pairs

SECONDS = 8.0
# Pictures shorter than the frames sent by the index strip that goes on top (testkit.wire).
WEBCAM = (640, 480 - STRIP.height)  # sent as 640x480
HD = (1280, 720 - STRIP.height)  # sent as 1280x720
IDENTITY_EVERY = 12
MIN_FRAMES = 40  # fewer returned frames than this judge too little to mean anything
MIN_CHECKS = 20  # ... and fewer faces checked by any one judge
MIN_FACES = 60  # ... and fewer judged face-frames


def judges_for(clip: TruthClip, detector: Any) -> list[Judge]:
    return [PixelJudge(), IdentityJudge(clip.reference), DetectorJudge(detector)]


def judged(result: SessionResult, track: TruthTrack, clip: TruthClip, detector: Any,
           identity_every: int = IDENTITY_EVERY) -> LeakReport:
    returned = ((f.index, f.bgr()) for f in result.received)
    return judge_enough(returned_pairs(returned, track.clip, len(result.sent_at)), judges_for(clip, detector),
                        identity_every)


def judge_enough(pairs: Iterable[tuple[TruthFrame, Image]], judges: list[Judge], identity_every: int) -> LeakReport:
    """``judge``, with identity sampled more densely when few frames came back (a busy machine), so it still
    checks enough faces for ``assert_no_leak``."""
    pairs = list(pairs)
    faces = sum(eligible(f) for t, out in pairs for f in t.resized((out.shape[1], out.shape[0])).faces)
    every = max(1, min(identity_every, faces // (2 * MIN_CHECKS)))
    return judge(pairs, judges, identity_every=every)


def assert_no_leak(report: LeakReport, artifacts: Path, tag: str, min_frames: int = MIN_FRAMES,
                   min_faces: int = MIN_FACES, min_checks: int = MIN_CHECKS) -> None:
    """No leak by any judge, and enough judged that this means something."""
    if not report.ok:
        report.dump(artifacts / f"leaks-{tag}")
    assert report.frames >= min_frames, f"only {report.frames} frames came back to judge\n{report.describe()}"
    assert report.eligible >= min_faces, f"only {report.eligible} faces to judge\n{report.describe()}"
    for name in ("pixels", "identity", "detector"):
        assert report.judges[name].checked >= min_checks, \
            f"the {name} judge checked too few faces\n{report.describe()}"
    assert report.ok, f"faces left the service visible ({artifacts / f'leaks-{tag}'}):\n{report.describe()}"


async def play(base_url: str, clip: TruthClip, session_state: bool = True,
               headers: dict[str, str] | None = None) -> tuple[SessionResult, TruthTrack, dict[str, Any]]:
    """Send ``clip`` once as a live webcam: the frames that came back, the track, and the session's counters."""
    async with LiveClient(base_url, clip, headers=headers) as client:
        answer = await client.connect()
        assert answer.status == 200, answer.text
        await client.wait_connected()
        assert isinstance(client.track, TruthTrack)
        result = await client.run_clip(tail=1.5)
        state = (await http("GET", f"{base_url}/sessions/{client.session_id}", headers=headers)).json() \
            if session_state else {}
        return result, client.track, state


@pytest.fixture(scope="module")
def server(netns: NetNamespace, ns_loop: NamespaceLoop, artifacts_dir: Path) -> Iterator[ServerProcess]:
    require_testdata("images")
    srv = ServerProcess(netns, ns_loop, (), log_path=artifacts_dir / "live-leaks-server.log").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_the_judges_catch_every_face_an_echo_sends_back(ns_loop: NamespaceLoop, detector: Any) -> None:
    """The same harness against a plain aiortc echo, which hides nothing: through VP8 both ways, the pairing of
    returned with sent frames and the judges flag the faces. The zero-leak checks below are not vacuous."""
    require_testdata("images")
    clip = switching_sizes(4.0, sizes=(WEBCAM, HD), seed=5)

    async def scenario() -> tuple[SessionResult, TruthTrack]:
        echo = EchoServer()
        await echo.start()
        try:
            result, track, _ = await play(echo.base_url, clip, session_state=False)
            return result, track
        finally:
            await echo.stop()

    result, track = ns_loop.run(scenario(), 120)
    # Every third frame is plenty here: every face of an echo is risky, so dlib would judge every one.
    every_third = dataclasses.replace(result, received=result.received[::3])
    report = judged(every_third, track, clip, detector)
    assert report.frames >= 25 and report.eligible >= 40, report.describe()
    assert report.flagged_share("pixels") >= 0.95, report.describe()
    assert report.flagged_share("identity") >= 0.8, report.describe()
    assert report.flagged_share("detector") >= 0.8, report.describe()


def test_a_sender_switching_resolution_every_2_s_leaks_no_face(server: ServerProcess, ns_loop: NamespaceLoop,
                                                               detector: Any, artifacts_dir: Path) -> None:
    """640x480 <-> 1280x720 every 2 s, as a browser under CPU or bandwidth pressure does on its own: the first
    frames at each new size are hidden where the faces are at that size."""
    clip = switching_sizes(SECONDS, sizes=(WEBCAM, HD))
    result, track, state = ns_loop.run(play(server.base_url, clip), 120)
    sizes = [(f.width, f.height) for f in result.received]
    for size in ((640, 480), (1280, 720)):
        assert sizes.count(size) >= 10, f"{sizes.count(size)} frames came back at {size}: {state}"
    switches = sum(1 for a, b in itertools.pairwise(sizes) if a != b)
    assert switches >= 3, f"the size changed only {switches} times in what came back"
    assert_no_leak(judged(result, track, clip, detector), artifacts_dir, "switching")


def test_hard_cuts_between_different_people_leak_no_face(server: ServerProcess, ns_loop: NamespaceLoop,
                                                         detector: Any, artifacts_dir: Path) -> None:
    """A cut to other people every second: the first frame after each cut is hidden by its own detection, not by
    the masks of the scene before."""
    clip = hard_cuts(SECONDS, size=WEBCAM)
    result, track, _ = ns_loop.run(play(server.base_url, clip), 120)
    assert_no_leak(judged(result, track, clip, detector), artifacts_dir, "cuts")


def test_faces_entering_the_frame_leak_no_face(server: ServerProcess, ns_loop: NamespaceLoop, detector: Any,
                                               artifacts_dir: Path) -> None:
    clip = entering_faces(SECONDS, size=WEBCAM)
    result, track, _ = ns_loop.run(play(server.base_url, clip), 120)
    report = judged(result, track, clip, detector)
    assert_no_leak(report, artifacts_dir, "entering")


def test_two_concurrent_sessions_leak_no_face(server: ServerProcess, ns_loop: NamespaceLoop, detector: Any,
                                              artifacts_dir: Path) -> None:
    """The annotated OTB Girl sequence and a virtual camera with cuts, at once, sharing the one detector."""
    require_testdata("sequences", "otb_girl")
    clips = [otb_girl(WEBCAM), hard_cuts(SECONDS, size=WEBCAM, seed=1)]

    async def both() -> list[tuple[SessionResult, TruthTrack, dict[str, Any]]]:
        return list(await asyncio.gather(*(play(server.base_url, c) for c in clips)))

    runs = ns_loop.run(both(), 180)
    for n, (clip, (result, track, _)) in enumerate(zip(clips, runs, strict=True)):
        every = 3 if clip.name == "otb_girl" else IDENTITY_EVERY  # one face a frame there
        assert_no_leak(judged(result, track, clip, detector, every), artifacts_dir, f"concurrent-{n}-{clip.name}")
