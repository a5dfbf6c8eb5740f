"""Bad input at the HTTP API (issue #8): malformed and huge SDP, wrong content types, invalid UTF-8, deep JSON,
unknown fields, odd methods and query strings. The real app (real detector, real aiortc peers) runs in this process
on loopback inside the run's network namespace, so an answer's ICE checks to fuzzed candidates stay inside it.

Properties, for every example: the answer is 2xx (the input happened to be valid) or 4xx, never 5xx; every error
is JSON ``{"error": "a readable sentence"}``; afterwards no session, viewer, job, job file or UDP socket is left
behind; and once the app has shut down, no thread of it is left either."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from webrtc_support import free_port, make_offer_sdp

from streamer.camera_config import CameraSettings
from streamer.server.app import create_app
from streamer.server.config import ServerConfig
from streamer.server.state import JOBS, SESSIONS, VIEWERS
from testkit.netns import NamespaceLoop

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(deadline=None, database=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def fuzz(examples: int) -> settings:
    """Few examples each: the file must stay under a minute on 2 busy cores (CI runs it on every push)."""
    return settings(FUZZ, max_examples=examples)
LIMIT = ServerConfig().max_offer_bytes


@dataclass
class Answer:
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"{self.method} {self.path[:120]} -> {self.status} {self.body[:300]!r}"


def live_threads() -> set[str]:
    """Threads by name and id, without the idle workers of event loops' default executors (they stay)."""
    return {f"{t.name}#{t.ident}" for t in threading.enumerate() if not t.name.startswith("asyncio_")}


async def udp_sockets() -> int:
    """UDP sockets in the network namespace of the calling thread (call it on the namespace loop)."""
    # A read of /proc never blocks.
    return sum(max(0, len(Path(f"/proc/thread-self/net/{name}").read_text().splitlines()) - 1)  # noqa: ASYNC240
               for name in ("udp", "udp6"))


class Service:
    """The app on loopback in the namespace, with blocking helpers for hypothesis' (synchronous) examples."""

    def __init__(self, ns_loop: NamespaceLoop, detector: Any, jobs_dir: Path) -> None:
        self.ns_loop = ns_loop
        self.jobs_dir = jobs_dir
        self.threads_before = live_threads()
        closed = ns_loop.run(free_port("127.0.0.1"))  # nothing listens there: the camera only ever reconnects
        self.config = ServerConfig(cameras=(CameraSettings("cam", f"rtsp://127.0.0.1:{closed}/stream"),),
                                   jobs_dir=jobs_dir, connect_timeout_s=300)
        self.app = create_app(self.config, detector)
        self.client: TestClient[web.Request, web.Application] | None = None
        self.offers: dict[str, str] = {}
        self.kept_sessions: set[str] = set()

        async def start() -> None:
            self.client = TestClient(TestServer(self.app, host="127.0.0.1"))
            await self.client.start_server()
            # Real aiortc offers, made in the namespace: their host candidates are its own addresses.
            self.offers = {
                "video": await make_offer_sdp(),
                "video+audio": await make_offer_sdp(audio="sendrecv"),
                "video+data": await make_offer_sdp(datachannel=True),
                "recvonly": await make_offer_sdp(video="recvonly"),
            }
            self.udp_baseline = await udp_sockets()

        ns_loop.run(start(), 60)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        assert self.client is not None
        client = self.client
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type

        async def go() -> Answer:
            skip = () if content_type is not None else ("Content-Type",)
            async with client.request(method, path, data=body, headers=all_headers,
                                      skip_auto_headers=skip) as response:
                return Answer(method, path, response.status, dict(response.headers), await response.read())

        return self.ns_loop.run(go(), 60)

    def check(self, answer: Answer) -> Answer:
        """Never a 5xx; every 4xx is JSON with one readable error sentence."""
        assert answer.status < 500, answer
        if answer.status >= 400 and answer.method != "HEAD":
            assert answer.headers.get("Content-Type", "").startswith("application/json"), answer
            body = answer.json()
            assert isinstance(body, dict) and set(body) == {"error"}, answer
            message = body["error"]
            assert isinstance(message, str) and len(message.strip()) >= 8, answer
            assert not message.rstrip().endswith(":"), answer  # "malformed SDP: " says nothing
        if answer.status == 405:
            assert answer.headers.get("Allow"), answer  # RFC 9110: a 405 says which methods the path takes
        return answer

    def end_peer(self, answer: Answer) -> None:
        """An offer that happened to be valid: end its peer the way a client would."""
        if answer.method == "POST" and answer.path.startswith("/offer") and answer.status == 200:
            reply = answer.json()
            assert reply["type"] == "answer" and reply["sdp"].startswith("v=0"), answer
            assert self.request("DELETE", f"/sessions/{reply['session']}").status == 204
        elif answer.method == "POST" and answer.path.startswith("/whep/") and answer.status == 201:
            assert answer.body.startswith(b"v=0"), answer
            assert answer.headers["Content-Type"].startswith("application/sdp"), answer
            assert self.request("DELETE", answer.headers["Location"]).status == 200
        elif answer.method == "POST" and answer.path.startswith("/jobs") and answer.status == 202:
            assert self.request("DELETE", f"/jobs/{answer.json()['id']}").status == 204

    def assert_nothing_left(self, limit_s: float = 5.0) -> None:
        """No session but the kept ones, no viewer, no job, no job file, no UDP socket beyond the baseline."""
        health = self.check(self.request("GET", "/healthz")).json()
        assert health["sessions"] == len(self.kept_sessions) and health["viewers"] == 0, health
        assert {s.id for s in self.app[SESSIONS].values()} == self.kept_sessions
        assert len(self.app[VIEWERS]) == 0 and self.app[JOBS].all() == []
        assert self.check(self.request("GET", "/jobs")).json() == {"jobs": []}
        deadline = time.monotonic() + limit_s
        while True:
            # Closed peers release their sockets on the loop's next turns, and a cancelled job's worker removes
            # its files when it sees the flag.
            files = [p for p in self.jobs_dir.rglob("*") if not p.is_dir()]
            sockets = self.ns_loop.run(udp_sockets())
            if not files and sockets <= self.udp_baseline:
                return
            assert time.monotonic() < deadline, f"left behind: files {files}, {sockets} UDP sockets " \
                                                f"(baseline {self.udp_baseline})"
            time.sleep(0.05)

    def open_session(self) -> str:
        answer = self.check(self.request("POST", "/offer", json.dumps({"sdp": self.offers["video"],
                                                                        "type": "offer"}).encode()))
        assert answer.status == 200, answer
        session: str = answer.json()["session"]
        self.kept_sessions.add(session)
        self.udp_baseline = self.ns_loop.run(udp_sockets())
        return session

    def close_session(self, session: str) -> None:
        self.kept_sessions.discard(session)
        assert self.request("DELETE", f"/sessions/{session}").status == 204

    def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            self.ns_loop.run(client.close(), 60)


@pytest.fixture(scope="module")
def service(ns_loop: NamespaceLoop, detector: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(ns_loop, detector, tmp_path_factory.mktemp("fuzz-jobs"))
    try:
        yield svc
    finally:
        svc.close()


def exchange(service: Service, method: str, path: str, body: bytes | None, content_type: str | None) -> Answer:
    """One request, its checks, the clean-up a client would do, and the check that nothing was left behind."""
    answer = service.check(service.request(method, path, body, content_type))
    service.end_peer(answer)
    service.assert_nothing_left()
    return answer


# ------------------------------------------------------------------------------------------------- strategies

queries = st.one_of(st.just(""), st.text(max_size=30).map(lambda t: "?" + quote(t, safe="=&")))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400),
                         st.floats(allow_nan=True), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=10)
option_values = st.fixed_dictionaries({}, optional={
    "mode": st.sampled_from(["mosaic", "blur", "solid"]) | json_values,
    "strength": st.floats(-0.5, 1.5) | json_values, "padding": st.floats(0.5, 3.5) | json_values,
    "threshold": st.floats(0, 1) | json_values, "debug": st.booleans() | json_values,
    "ellipse": st.booleans() | json_values, "zoom": json_values})
content_types = st.sampled_from([None, "application/json", "text/plain", "application/sdp",
                                 "multipart/form-data; boundary=xyz", "application/json; charset=latin-1",
                                 "application/x-www-form-urlencoded", "no/such; type", "multipart/form-data"])


def deep(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_json = st.builds(deep, st.sampled_from([1000, 20_000, 50_000, 100_000]), st.sampled_from(["array", "object"]))


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def offer_bodies(offers: dict[str, str]) -> st.SearchStrategy[bytes]:
    real = st.sampled_from(sorted(offers.values()))
    return st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=100).map(lambda b: b'{"sdp": "' + b"\xff\xfe" + b + b'", "type": "offer"}'),
        json_values.map(dumps),
        st.fixed_dictionaries({}, optional={"sdp": real | json_values, "type": st.just("offer") | json_values,
                                            "options": option_values | json_values, "extra": json_values}).map(dumps),
        st.builds(lambda sdp, opts: dumps({"sdp": sdp, "type": "offer", "options": opts}), real, option_values),
        deep_json.map(str.encode),
        st.builds(lambda sdp, d: f'{{"sdp": {json.dumps(sdp)}, "type": "offer", "options": {d}}}'.encode(), real,
                  deep_json),
        # Near and over the size limit: the whole body, then the SDP in it.
        st.integers(LIMIT - 64, LIMIT + 64).map(lambda n: dumps({"sdp": "v=0\r\n" + "a" * n, "type": "offer"})),
        st.integers(LIMIT - 200, LIMIT - 40).map(lambda n: dumps({"sdp": "v=0\r\nm=video 9 x\r\n" + "b" * n,
                                                                 "type": "offer"})),
    )


def sections(sdp: str) -> list[list[str]]:
    """The session part, then one list of lines per m= section."""
    out: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            out.append([])
        out[-1].append(line)
    return out


@st.composite
def mutated_sdp(draw: st.DrawFn, offers: dict[str, str]) -> str:
    """A real aiortc offer with one to three mutations of the kinds browsers, proxies and attackers produce."""
    lines = draw(st.sampled_from(sorted(offers.values()))).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "replace", "garble", "duplicate", "drop-m", "port", "candidate-port",
                                     "no-ice", "candidates", "direction", "rtpmap", "huge-line", "endings",
                                     "nul"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if kind == "drop" and lines:
            del lines[i]
        elif kind == "replace" and lines:
            lines[i] = draw(st.text(max_size=60).map(lambda t: t.replace("\r", "").replace("\n", "")))
        elif kind == "garble" and lines:
            line = lines[i]
            j = draw(st.integers(0, len(line)))
            lines[i] = line[:j] + draw(st.text(max_size=5)) + line[j + draw(st.integers(0, 5)):]
        elif kind == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif kind == "drop-m":
            parts = sections("\r\n".join(lines))
            if len(parts) > 1:
                del parts[draw(st.integers(1, len(parts) - 1))]
            lines = [line for part in parts for line in part]
        elif kind == "port":
            port = draw(st.sampled_from(["-1", "0", "65536", "99999999999999999999", "x", ""]))
            lines = [re.sub(r"^(m=\w+) \S+", rf"\1 {port}", line) for line in lines]
        elif kind == "candidate-port":
            port = draw(st.sampled_from(["-1", "0", "65536", "99999999999999999999", "x"]))
            lines = [re.sub(r"^(a=candidate:\S+ \d+ \w+ \d+ \S+) \d+", rf"\1 {port}", line) for line in lines]
        elif kind == "no-ice":
            prefixes = draw(st.sets(st.sampled_from(["a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup",
                                                     "a=mid", "a=group"]), min_size=1))
            lines = [line for line in lines if not line.startswith(tuple(prefixes))]
        elif kind == "candidates":
            # Thousands of candidates, all inside the namespace (10.77.0.0/24), below and above the size limit.
            count = draw(st.sampled_from([10, 500, 3000, 5000]))
            extra = [f"a=candidate:{n} 1 udp {2130706431 - n} 10.77.0.{2 + n % 200} {1024 + n} typ host"
                     for n in range(count)]
            where = next((k for k, line in enumerate(lines) if line.startswith("a=candidate")), len(lines))
            lines[where:where] = extra
        elif kind == "direction":
            new = draw(st.sampled_from(["a=recvonly", "a=sendonly", "a=inactive", "a=bogus"]))
            lines = [new if line in ("a=sendrecv", "a=recvonly") else line for line in lines]
        elif kind == "rtpmap":
            lines = [re.sub(r"^a=rtpmap:\d+ ", f"a=rtpmap:{draw(st.sampled_from(['999999', '-1', 'x', '']))} ", line)
                     for line in lines]
        elif kind == "huge-line" and lines:
            lines.insert(i, "a=x-junk:" + "z" * draw(st.integers(1000, LIMIT)))
        elif kind == "endings":
            return draw(st.sampled_from(["\n", "\r", "\r\r\n"])).join(lines) + "\n"
        elif kind == "nul" and lines:
            lines[i] = lines[i][:3] + "\x00" + lines[i][3:]
    return "\r\n".join(lines) + "\r\n"


# -------------------------------------------------------------------------------------------------- /offer


def test_offer_bodies_of_any_shape(service: Service) -> None:
    @fuzz(100)
    @given(data=st.data(), content_type=content_types, query=queries)
    def run(data: st.DataObject, content_type: str | None, query: str) -> None:
        body = data.draw(offer_bodies(service.offers), label="body")
        exchange(service, "POST", "/offer" + query, body, content_type)

    run()


def test_almost_valid_offers(service: Service) -> None:
    @fuzz(50)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        sdp = data.draw(mutated_sdp(service.offers), label="sdp")
        exchange(service, "POST", "/offer", dumps({"sdp": sdp, "type": "offer"}), "application/json")

    run()


# --------------------------------------------------------------------------------------------------- /whep


whep_content_types = st.sampled_from(["application/sdp"] * 4 + [None, "application/json", "text/plain",
                                                                 "application/sdp; x=y"])


def test_whep_offers_of_any_shape(service: Service) -> None:
    @fuzz(50)
    @given(data=st.data(), content_type=whep_content_types, query=queries)
    def run(data: st.DataObject, content_type: str | None, query: str) -> None:
        body = data.draw(st.one_of(
            mutated_sdp(service.offers).map(lambda s: s.encode("utf-8", "surrogatepass")),
            mutated_sdp(service.offers).map(lambda s: s.encode("utf-8", "surrogatepass") + b"a=x:\xff\xfe\r\n"),
            st.binary(max_size=200), st.sampled_from(sorted(service.offers.values())).map(str.encode),
            st.integers(LIMIT - 64, LIMIT + 64).map(lambda n: b"v=0\r\nm=video 9 x\r\n" + b"a" * n),
        ), label="body")
        exchange(service, "POST", "/whep/cam" + query, body, content_type)

    run()


# ------------------------------------------------------------------------------------- a live session's API


def test_live_settings_accept_valid_changes_and_refuse_the_rest_unchanged(service: Service) -> None:
    session = service.open_session()
    path = f"/sessions/{session}"
    try:
        @fuzz(50)
        @given(body=st.one_of(option_values.map(dumps), json_values.map(dumps), deep_json.map(str.encode),
                              st.binary(max_size=100)),
               content_type=content_types)
        def run(body: bytes, content_type: str | None) -> None:
            before = service.check(service.request("GET", path)).json()["settings"]
            answer = exchange(service, "POST", path + "/settings", body, content_type)
            after = service.check(service.request("GET", path)).json()["settings"]
            if answer.status == 200:
                assert answer.json() == after, answer
            else:
                assert answer.status in (400, 413) and after == before, answer  # refused: nothing changed

        run()
    finally:
        service.close_session(session)
    service.assert_nothing_left()


# ------------------------------------------------------------------------------------ any method, any path

segments = st.text(max_size=20).filter(lambda t: t != "cam").map(lambda t: quote(t, safe=""))
paths = st.one_of(
    st.sampled_from(["/offer", "/jobs", "/cameras", "/config", "/healthz", "/metrics", "/whep/cam", "/sessions",
                     "/", "/static/", "/static/../pyproject.toml", "/static/%2e%2e/pyproject.toml"]),
    st.builds(lambda template, seg: template.format(seg), st.sampled_from([
        "/sessions/{}", "/sessions/{}/settings", "/whep/{}", "/whep/cam/{}", "/whep/{}/x", "/cameras/{}",
        "/cameras/{}/snapshot.jpg", "/jobs/{}", "/jobs/{}/result", "/jobs/{}/events", "/static/{}", "/{}"]),
        segments),
)


def test_any_method_on_any_path(service: Service) -> None:
    @fuzz(120)
    # Only methods llhttp parses: it answers any other with a plain-text 400 before the app sees the request.
    @given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"]),
           path=paths, query=queries, body=st.one_of(st.none(), st.binary(max_size=50), json_values.map(dumps)),
           content_type=content_types)
    def run(method: str, path: str, query: str, body: bytes | None, content_type: str | None) -> None:
        answer = exchange(service, method, path + query, body, content_type)
        if answer.status == 200 and path.startswith("/static/"):
            assert b"[project]" not in answer.body, answer  # nothing outside web/ is served

    run()


# ---------------------------------------------------------------------------------------------------- /jobs

field_names = st.sampled_from(["file", "file", "mode", "strength", "", "FILE", "x"]) | st.text(max_size=8)
header_values = st.sampled_from([
    "text/plain; charset=utf-8", "text/plain; charset=no-such-charset", "application/octet-stream",
    "multipart/mixed; boundary=inner", "image/jpeg", "text/plain; charset=utf-16"])

transfer_encodings = st.sampled_from(["base64", "quoted-printable", "binary", "x-weird"])
content_encodings = st.sampled_from(["gzip", "deflate", "identity", "br", "x-weird"])


@st.composite
def multipart_uploads(draw: st.DrawFn) -> tuple[bytes, str | None]:
    boundary = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789'()+_,-./:=?", min_size=1,
                            max_size=70))
    chunks: list[bytes] = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(field_names)
        disposition = f'form-data; name="{name}"'
        if draw(st.booleans()):
            disposition += f'; filename="{draw(st.text(max_size=30))}"'
        headers = [f"Content-Disposition: {disposition}"] if draw(st.integers(0, 9)) else []
        if draw(st.booleans()):
            headers.append(f"Content-Type: {draw(header_values)}")
        if draw(st.integers(0, 3)) == 0:
            headers.append(f"Content-Transfer-Encoding: {draw(transfer_encodings)}")
        if draw(st.integers(0, 3)) == 0:
            headers.append(f"Content-Encoding: {draw(content_encodings)}")
        value = draw(st.one_of(st.binary(max_size=64), st.sampled_from(
            [b"blur", b"solid", b"0.7", b"2", b"nan", b"1e999", b"-0", b"\xff\xfe", b"x" * 100])))
        chunks.append(f"--{boundary}\r\n".encode() + "\r\n".join(headers).encode("utf-8", "surrogatepass")
                      + b"\r\n\r\n" + value + b"\r\n")
    if draw(st.integers(0, 4)):
        chunks.append(f"--{boundary}--\r\n".encode())
    body = b"".join(chunks)
    if draw(st.integers(0, 5)) == 0:
        body = body[:draw(st.integers(0, len(body)))]  # cut off
    content_type = draw(st.sampled_from([
        f"multipart/form-data; boundary={boundary}", f'multipart/form-data; boundary="{boundary}"',
        "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=other",
        f"multipart/mixed; boundary={boundary}", "application/json", None, "text/plain"]))
    return body, content_type


def encoded_field(encoding: str) -> tuple[bytes, str]:
    """A mode field whose Content-Encoding aiohttp cannot undo."""
    return (b'--b\r\nContent-Disposition: form-data; name="mode"\r\nContent-Encoding: ' + encoding.encode()
            + b"\r\n\r\nblur\r\n--b--\r\n", "multipart/form-data; boundary=b")


def test_uploads_of_any_shape(service: Service) -> None:
    @fuzz(120)
    @example(upload=encoded_field("x-weird"), query="")
    @example(upload=encoded_field("deflate"), query="")
    @example(upload=encoded_field("gzip"), query="")
    @given(upload=multipart_uploads(), query=queries)
    def run(upload: tuple[bytes, str | None], query: str) -> None:
        body, content_type = upload
        exchange(service, "POST", "/jobs" + query, body, content_type)

    run()


# -------------------------------------------------------------------------------------------------- the end


def test_shutdown_after_the_fuzzing_leaves_no_thread_behind(service: Service) -> None:
    """Last in this file: everything above happened on this app, which now shuts down."""
    service.assert_nothing_left()
    service.close()
    deadline = time.monotonic() + 10
    while (left := live_threads() - service.threads_before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == set()
    assert sorted(service.jobs_dir.rglob("*")) == []
