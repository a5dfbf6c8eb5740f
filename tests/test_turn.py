"""The compose `turn` profile against a real coturn: Debian's turnserver runs the compose service's own command line
on deploy/turnserver.conf (only the listening address and port, and files that must not touch the system, differ,
because a test runs on loopback beside other tests), and aioice's TURN client (aiortc's) talks to it.

What is proved: credentials from streamer/server/turn.py are accepted, expired or forged ones are refused (401), no
permission is granted towards any denied range (403, checked at both ends and the middle of each, IPv4 and IPv6)
while public peers and the operator's TURN_ALLOWED_PEER_IP are, TCP relays (RFC 6062) are refused, and the service
refuses to start without a secret. Skipped only where coturn is not installed (.ci/run installs it); the IPv6 peer
checks also need an IPv6 loopback address."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aioice import stun, turn
from conftest import REPO_ROOT

from streamer.server.secret_files import read_secret_file
from streamer.server.turn import (
    DEFAULT_TTL_S,
    MAX_TTL_S,
    TurnRelay,
    check_secret,
    make_credential,
    parse_turn_url,
    turn_ice_servers,
)

TURNSERVER = shutil.which("turnserver")
needs_coturn = pytest.mark.skipif(TURNSERVER is None, reason="coturn's turnserver is not installed (Debian package "
                                                             "`coturn`; .ci/run installs it)")
CONF = REPO_ROOT / "deploy" / "turnserver.conf"
COMPOSE = REPO_ROOT / "docker-compose.yml"
CONTAINER_CONF = "/etc/coturn/turnserver.conf"
SECRET = "test-secret-0123456789abcdef"
ALLOWED = "10.0.0.5 192.168.7.0-192.168.7.255"  # TURN_ALLOWED_PEER_IP: one address and one range
READY_TIMEOUT_S = 60.0  # a busy 2-core machine; readiness is polled, this only bounds a coturn that never answers
RELAY_PORTS = range(49160, 49201)  # deploy/turnserver.conf's min-port..max-port: the listening port stays outside

# RFC 6156's REQUESTED-ADDRESS-FAMILY, which aioice's STUN codec lacks: an IPv6 relay is needed to check IPv6 peers.
# Adding an attribute to aioice's tables changes nothing for messages without it.
_RAF = (0x0017, "REQUESTED-ADDRESS-FAMILY", stun.pack_unsigned, stun.unpack_unsigned)
stun.ATTRIBUTES_BY_NAME.setdefault(_RAF[1], _RAF)
stun.ATTRIBUTES_BY_TYPE.setdefault(_RAF[0], _RAF)
FAMILY_IPV6 = 0x02000000

Addr = tuple[str, int]
Range = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address]


def config_ranges(key: str, text: str | None = None) -> list[Range]:
    """The ``key=A[-B]`` lines of deploy/turnserver.conf (or of ``text``), as address pairs."""
    out: list[Range] = []
    for line in (CONF.read_text() if text is None else text).splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name == key:
            low, _, high = value.partition("-")
            out.append((ipaddress.ip_address(low), ipaddress.ip_address(high or low)))
    return out


def allowed_ranges() -> list[Range]:
    return config_ranges("allowed-peer-ip", "\n".join(f"allowed-peer-ip={a}" for a in ALLOWED.split()))


def inside(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, ranges: list[Range]) -> bool:
    return any(low.version == addr.version and low <= addr <= high for low, high in ranges)  # type: ignore[operator]


def compose_command() -> str:
    """The coturn service's `sh -c` script in docker-compose.yml, folded as YAML's `>-` does and with compose's `$$`
    unescaped: what the container runs."""
    text = COMPOSE.read_text()
    service = text[text.index("\n  coturn:\n"):]
    assert f"- ./deploy/turnserver.conf:{CONTAINER_CONF}:ro" in service
    lines = service[service.index("      - >-\n") + len("      - >-\n"):].splitlines()
    body = [line.strip() for line in lines[:next((i for i, line in enumerate(lines)
                                                  if not line.startswith("        ")), len(lines))]]
    return " ".join(body).replace("$$", "$")


def free_port(v6: bool) -> int:
    """A port free for UDP and TCP on the loopback addresses coturn will listen on, outside its relay range."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port in RELAY_PORTS:
            continue
        try:
            for family, host in [(socket.AF_INET, "127.0.0.1")] + ([(socket.AF_INET6, "::1")] if v6 else []):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(family, kind) as s:
                        s.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no free port for coturn")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def stun_answers(port: int) -> bool:
    """Whether a STUN Binding request to 127.0.0.1:port is answered (within 0.5 s) and TCP connects."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(bytes(stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)),
                 ("127.0.0.1", port))
        try:
            stun.parse_message(s.recv(2048))
        except (TimeoutError, ConnectionRefusedError, ValueError):
            return False
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@dataclass
class Coturn:
    port: int
    v6: bool
    log: Path

    @property
    def addr(self) -> Addr:
        return ("127.0.0.1", self.port)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def run_compose_command(tmp: Path, env: dict[str, str], overrides: list[str]) -> subprocess.Popen[bytes]:
    """Start the compose service's script with Debian's turnserver. Test-only differences: the config comes from the
    repository instead of the container's mount, its private copy goes to ``tmp`` instead of the container's /tmp,
    and ``overrides`` are appended to turnserver's command line (which wins over the config file)."""
    script = compose_command()
    assert CONTAINER_CONF in script and "/tmp/turnserver.conf" in script
    script = script.replace(CONTAINER_CONF, str(CONF)).replace("/tmp/turnserver.conf", str(tmp / "turnserver.conf"))
    shim = tmp / "bin" / "turnserver"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(str(TURNSERVER))} "$@" {shlex.join(overrides)}\n')
    shim.chmod(0o755)
    full_env = {"PATH": f"{shim.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}", **env}
    return subprocess.Popen(["sh", "-c", script], env=full_env, stdout=(tmp / "coturn.log").open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], server: Coturn) -> bool:
    """Poll until coturn answers on its port: True, or False if another process took the port in between (coturn
    then keeps retrying the bind)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stun_answers(server.port):
        if "Address already in use" in server.log_text():
            return False
        assert proc.poll() is None, f"turnserver exited with {proc.returncode}:\n{server.log_text()}"
        assert time.monotonic() < deadline, f"turnserver never answered:\n{server.log_text()}"
    return True


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    if TURNSERVER is None:
        pytest.skip("coturn's turnserver is not installed (Debian package `coturn`; .ci/run installs it)")
    v6 = ipv6_loopback()
    for _ in range(3):
        tmp = tmp_path_factory.mktemp("coturn")
        port = free_port(v6)
        # Loopback only (a test must not listen on the machine's network), this port, and pid file and SQLite
        # database in the test's folder instead of /var/run and /var/lib/turn. Nothing about peers or credentials.
        overrides = [f"--listening-port={port}", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
                     f"--pidfile={tmp / 'turnserver.pid'}", f"--userdb={tmp / 'turndb'}"]
        if v6:
            overrides += ["--listening-ip=::1", "--relay-ip=::1"]
        proc = run_compose_command(tmp, {"TURN_SECRET": SECRET, "TURN_ALLOWED_PEER_IP": ALLOWED}, overrides)
        server = Coturn(port, v6, tmp / "coturn.log")
        try:
            if wait_ready(proc, server):
                yield server
                return
        finally:
            stop(proc)
    raise AssertionError(f"turnserver could not bind a port in 3 attempts:\n{server.log_text()}")


# --- a minimal TURN client on aioice's ---------------------------------------------------------------------------


def error_of(exc: stun.TransactionFailed) -> tuple[int, str]:
    code, reason = exc.response.attributes["ERROR-CODE"]
    return int(code), str(reason)


@contextlib.asynccontextmanager
async def control(server: Addr, username: str, credential: str, tcp: bool = False) -> AsyncIterator[Any]:
    """aioice's TURN client protocol on a UDP (or TCP) connection to coturn, closed at the end."""
    loop = asyncio.get_running_loop()
    transport: asyncio.BaseTransport
    proto: Any
    if tcp:
        transport, proto = await loop.create_connection(
            lambda: turn.TurnClientTcpProtocol(server, username, credential, 600, 500), *server)
    else:
        transport, proto = await loop.create_datagram_endpoint(
            lambda: turn.TurnClientUdpProtocol(server, username, credential, 600, 500), remote_addr=server)
    try:
        yield proto
    finally:
        transport.close()


async def allocate(proto: Any, transport: int = turn.UDP_TRANSPORT, ipv6: bool = False) -> Addr:
    """An Allocate request (authenticating on the 401 challenge, as aioice does): the relayed address."""
    request = stun.Message(message_method=stun.Method.ALLOCATE, message_class=stun.Class.REQUEST)
    request.attributes["LIFETIME"] = 600
    request.attributes["REQUESTED-TRANSPORT"] = transport
    if ipv6:
        request.attributes["REQUESTED-ADDRESS-FAMILY"] = FAMILY_IPV6
    response, _ = await proto.request_with_retry(request)
    relayed: Addr = response.attributes["XOR-RELAYED-ADDRESS"]
    return relayed


async def refresh(proto: Any, lifetime: int = 600) -> int:
    request = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
    request.attributes["LIFETIME"] = lifetime
    response, _ = await proto.request_with_retry(request)
    return int(response.attributes.get("LIFETIME", 0))


async def permission(proto: Any, ip: str, method: stun.Method = stun.Method.CREATE_PERMISSION,
                     channel: int = 0x4000) -> int:
    """0 when coturn grants a permission towards ``ip`` (CreatePermission, or ChannelBind with ``channel``), else the
    error code. Nothing is sent to the peer either way."""
    request = stun.Message(message_method=method, message_class=stun.Class.REQUEST)
    request.attributes["XOR-PEER-ADDRESS"] = (ip, 9)
    if method == stun.Method.CHANNEL_BIND:
        request.attributes["CHANNEL-NUMBER"] = channel
    try:
        await proto.request_with_retry(request)
    except stun.TransactionFailed as exc:
        return error_of(exc)[0]
    return 0


def credential(ttl_s: int | None = None, secret: str = SECRET) -> tuple[str, str]:
    """User name and credential as a browser gets them: from the /config entry that turn.py makes, or, for a TTL
    that --turn-ttl would refuse (expired, a few seconds), from make_credential directly."""
    if ttl_s is not None:
        cred = make_credential(secret, ttl_s)
        return cred.username, cred.credential
    (entry,) = TurnRelay(("turn:127.0.0.1:3478",), secret).ice_servers()
    return entry["username"], entry["credential"]


class Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.lost = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


# --- (a) credentials from turn.py are accepted -----------------------------------------------------------------


@needs_coturn
async def test_aiortc_turn_client_allocates_with_credentials_from_config(coturn: Coturn) -> None:
    """aioice's create_turn_endpoint, which aiortc gathers relay candidates with, over UDP and TCP."""
    username, password = credential()
    for transport in ("udp", "tcp"):
        relay, receiver = await turn.create_turn_endpoint(Receiver, coturn.addr, username, password,
                                                          transport=transport)
        assert relay.get_extra_info("sockname")[0] == "127.0.0.1"
        relay.close()  # deletes the allocation first, then reports connection_lost
        await asyncio.wait_for(receiver.lost.wait(), 30)


# --- (b) expired and forged credentials are refused ---------------------------------------------------------------


@needs_coturn
async def test_expired_or_forged_credentials_are_refused(coturn: Coturn) -> None:
    cases = {
        "expired a second ago": credential(ttl_s=-1),
        "expired a day ago": credential(ttl_s=-86400),
        "signed with another secret": credential(secret="another-secret-0123456789"),
        "valid name, someone else's signature": (credential()[0], credential(ttl_s=7200)[1]),
    }
    for case, (username, password) in cases.items():
        async with control(coturn.addr, username, password) as proto:
            with pytest.raises(stun.TransactionFailed) as info:
                await allocate(proto)
            assert error_of(info.value)[0] == 401, case
            # The refusal came after the authenticated retry, not from the unauthenticated first try.
            assert proto.integrity_key is not None, case
    async with control(coturn.addr, *credential()) as proto:
        await allocate(proto)  # the same path with a good credential: the refusals above are about the credential
        await refresh(proto, 0)


@needs_coturn
async def test_expiry_stops_new_allocations_but_not_a_running_one(coturn: Coturn) -> None:
    """Why a short --turn-ttl is safe: coturn checks the expiry when a client authenticates, so a session that has
    its allocation keeps refreshing it, while the same credential cannot start another one."""
    for ttl_s in (2, 4, 8):  # a stalled machine may use up a short TTL before the first allocation
        username, password = credential(ttl_s)
        expires_at = int(username.split(":")[0])
        async with control(coturn.addr, username, password) as proto:
            try:
                await allocate(proto)
            except stun.TransactionFailed as exc:
                if error_of(exc)[0] == 401 and time.time() > expires_at:
                    continue
                raise
            # Until the expiry is past on the clock that coturn compares it with (whole seconds): a deadline on the
            # clock is the event here, not a guess at how long something takes.
            await asyncio.sleep(max(0.0, expires_at + 1.05 - time.time()))
            async with control(coturn.addr, username, password) as late:
                with pytest.raises(stun.TransactionFailed) as info:
                    await allocate(late)
                assert error_of(info.value)[0] == 401
            assert await refresh(proto) > 0
            assert await permission(proto, "8.8.8.8") == 0
            await refresh(proto, 0)
        return
    raise AssertionError("no allocation could be made before even an 8 s credential expired")


# --- (c) no relaying to private, loopback or other internal peers ------------------------------------------------


def samples() -> tuple[list[str], list[str]]:
    """(denied, accepted) peer addresses: the ends and middle of every denied range, and the addresses just outside
    each range, which must be accepted unless another range (or coturn itself: ``::``) covers them."""
    ranges, allowed = config_ranges("denied-peer-ip"), allowed_ranges()
    denied: list[str] = ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "172.16.0.1", "100.64.0.1",
                         "0.0.0.0", "::", "::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "fd00::1", "fe80::1",
                         "10.0.0.4", "10.0.0.6", "192.168.8.1"]
    accepted: list[str] = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2606:4700:4700::1111",
                           "10.0.0.5", "192.168.7.1", "192.168.7.255"]
    for low, high in ranges:
        for addr in (low, low + (int(high) - int(low)) // 2, high):
            denied.append(str(addr))
        last = 2**high.max_prefixlen - 1
        for outside in (low - 1 if int(low) > 1 else None, high + 1 if int(high) < last else None):
            # 0.0.0.0 and :: are refused by coturn itself (see deploy/turnserver.conf), whatever the ranges say.
            if outside is not None and not inside(outside, ranges):
                accepted.append(str(outside))
    denied = [a for a in denied if not inside(ipaddress.ip_address(a), allowed)]
    return sorted(set(denied)), sorted(set(accepted))


@needs_coturn
@pytest.mark.parametrize("version", [4, 6])
async def test_private_and_internal_peers_are_refused_public_ones_allowed(coturn: Coturn, version: int) -> None:
    if version == 6 and not coturn.v6:
        pytest.skip("IPv6 peers need an IPv6 relay, and this machine has no IPv6 loopback (::1) to give coturn one")
    denied, accepted = (
        [ip for ip in group if ipaddress.ip_address(ip).version == version] for group in samples())
    answers: dict[str, int] = {}
    async with control(coturn.addr, *credential()) as proto:
        relayed = await allocate(proto, ipv6=version == 6)
        assert ipaddress.ip_address(relayed[0]).version == version
        for ip in denied + accepted:
            answers[ip] = await permission(proto, ip)
        # ChannelBind installs a permission too (aioice's sendto uses it): the same rule must hold there.
        channel_peers = (("127.0.0.1", "10.0.0.1", "8.8.8.8") if version == 4
                         else ("::1", "fd00::1", "2001:4860:4860::8888"))
        for number, ip in enumerate(channel_peers):
            answers[f"channel {ip}"] = await permission(proto, ip, stun.Method.CHANNEL_BIND, 0x4000 + number)
        await refresh(proto, 0)
    wrong = {ip: code for ip, code in answers.items()
             if code != (0 if ip.removeprefix("channel ") in accepted else 403)}
    assert not wrong, f"unexpected answers (0: granted, 403: Forbidden IP): {wrong}"


def test_peer_samples_include_the_named_cases() -> None:
    denied, accepted = samples()
    for ip in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "::", "::1", "::ffff:10.0.0.1",
               "fe80::1", "fd00::1", "10.0.0.4"):
        assert ip in denied, ip
    for ip in ("8.8.8.8", "2001:4860:4860::8888", "10.0.0.5", "192.168.7.1"):
        assert ip in accepted, ip
    assert not set(denied) & set(accepted)


def test_denied_ranges_cover_the_special_purpose_blocks() -> None:
    """The ranges themselves, without coturn: every block the relay must never reach is inside one, and each range
    is a single CIDR block, since coturn compares IPv6 addresses byte by byte (any other range would match a
    different set than it reads), and none starts at ``::``, which coturn's range check takes as a wildcard that
    also matches every IPv4 address."""
    ranges = config_ranges("denied-peer-ip")
    for low, high in ranges:
        blocks = list(ipaddress.summarize_address_range(low, high))
        assert len(blocks) == 1, f"{low}-{high} is not one CIDR block: {blocks}"
        assert str(low) != "::", f"{low}-{high}"
    must = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
            "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
            "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
            "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
            "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"]
    for block in map(ipaddress.ip_network, must):
        assert any(low.version == block.version and low <= block[0] and block[-1] <= high  # type: ignore[operator]
                   for low, high in ranges), f"{block} is not denied"
    text = CONF.read_text()
    for flag in ("use-auth-secret", "no-tcp-relay", "no-multicast-peers", "no-cli", "min-port=49160",
                 "max-port=49200"):
        assert re.search(rf"^{re.escape(flag)}$", text, re.M), flag
    # Nothing that would undo the above: a static user, loopback peers, the CLI, a TCP relay.
    for flag in ("user=", "lt-cred-mech", "allow-loopback-peers", "cli-password", "static-auth-secret"):
        assert not re.search(rf"^\s*{re.escape(flag)}", text, re.M), flag


# --- (d) no TCP relays ----------------------------------------------------------------------------------------------


@needs_coturn
async def test_tcp_relay_allocations_are_refused(coturn: Coturn) -> None:
    """RFC 6062 TCP allocations are asked for over a TCP connection to the server; that connection itself stays
    usable for UDP relays (turn:HOST:3478?transport=tcp for networks that block UDP)."""
    async with control(coturn.addr, *credential(), tcp=True) as proto:
        with pytest.raises(stun.TransactionFailed) as info:
            await allocate(proto, turn.TCP_TRANSPORT)
        code, reason = error_of(info.value)
        assert code == 442 and "not allowed" in reason, (code, reason)  # Unsupported Transport Protocol
        assert proto.integrity_key is not None  # refused after authenticating, for the configuration's sake
        await allocate(proto)
        await refresh(proto, 0)
    async with control(coturn.addr, *credential()) as proto:
        with pytest.raises(stun.TransactionFailed) as info:
            await allocate(proto, turn.TCP_TRANSPORT)
        assert error_of(info.value)[0] in (400, 442)


# --- the compose service refuses to run without a secret ----------------------------------------------------------


@pytest.mark.parametrize("secret", [None, "", "short-secret"])
def test_compose_service_refuses_to_start_without_a_real_secret(tmp_path: Path, secret: str | None) -> None:
    env = {} if secret is None else {"TURN_SECRET": secret}
    marker = tmp_path / "started"
    script = compose_command().replace("exec turnserver", f"touch {marker}; exec true")
    done = subprocess.run(["sh", "-c", script.replace("/tmp/turnserver.conf", str(tmp_path / "t.conf"))],
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 1 and "set TURN_SECRET" in done.stderr, done
    assert not marker.exists() and not (tmp_path / "t.conf").exists()


def test_compose_service_keeps_the_secret_off_the_command_line(tmp_path: Path) -> None:
    """The secret reaches coturn in a private copy of the config (0600), neither in turnserver's arguments, which
    every local user can read in `ps`, nor in its environment; the allowed peers become allowed-peer-ip lines."""
    script = compose_command().replace(CONTAINER_CONF, str(CONF)).replace("/tmp/turnserver.conf",
                                                                          str(tmp_path / "t.conf"))
    fake = tmp_path / "bin" / "turnserver"  # records what the real one would get
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >{tmp_path / "args"}; env >{tmp_path / "env"}\n')
    fake.chmod(0o755)
    done = subprocess.run(["sh", "-c", script], env={"PATH": f"{fake.parent}:{os.environ.get('PATH', '/usr/bin')}",
                                                     "TURN_SECRET": SECRET, "TURN_ALLOWED_PEER_IP": ALLOWED},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "t.conf"
    assert (tmp_path / "args").read_text().split() == ["-c", str(copy)]
    assert SECRET not in (tmp_path / "env").read_text()
    assert copy.stat().st_mode & 0o777 == 0o600
    text = copy.read_text()
    assert text.startswith(CONF.read_text()) and f"\nstatic-auth-secret={SECRET}\n" in text
    assert text.endswith("allowed-peer-ip=10.0.0.5\nallowed-peer-ip=192.168.7.0-192.168.7.255\n")


# --- streamer/server/turn.py on its own -----------------------------------------------------------------------------


def test_credentials_follow_coturns_rest_api_scheme() -> None:
    import base64
    import hashlib
    import hmac

    cred = make_credential(SECRET, 600, "streamer", now=1_700_000_000.7)
    assert cred.username == "1700000600:streamer" and cred.expires_at == 1_700_000_600
    expected = base64.b64encode(hmac.new(SECRET.encode(), b"1700000600:streamer", hashlib.sha1).digest()).decode()
    assert cred.credential == expected and expected not in repr(cred)
    entries = turn_ice_servers(["turn:h:3478", "turn:h:3478?transport=tcp"], SECRET, now=1_700_000_000)
    assert entries == [{"urls": ["turn:h:3478", "turn:h:3478?transport=tcp"],
                        "username": f"{1_700_000_000 + DEFAULT_TTL_S}:streamer",
                        "credential": make_credential(SECRET, DEFAULT_TTL_S, now=1_700_000_000).credential}]
    assert turn_ice_servers([], SECRET) == []
    relay = TurnRelay(("turns:relay.example:5349",), SECRET)
    assert SECRET not in repr(relay) and relay.ice_servers()[0]["username"].endswith(":streamer")
    with pytest.raises(ValueError, match="name"):
        make_credential(SECRET, name="a:b")


def test_turn_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    for url in ("turn:h", "turn:h:3478", "turns:h:5349?transport=tcp", "turn:10.0.0.1:3478?transport=udp"):
        assert parse_turn_url(url) == url
    for url in ("stun:h:3478", "turn:user:pw@h:3478", "turn:h:0", "turn:h:70000", "turns:h?transport=udp",
                "turn:[::1]:3478", "turn:h:3478?transport=sctp", "turn:", "h:3478"):
        with pytest.raises(ValueError, match="--turn-url"):
            parse_turn_url(url)
    for secret in ("short", "has space 0123456789", "ünïcode-0123456789abc", "tab\t0123456789abcdef"):
        with pytest.raises(ValueError, match="TURN secret"):
            check_secret(secret)
    for ttl in (0, 59, MAX_TTL_S + 1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="--turn-ttl"):
            TurnRelay(("turn:h",), SECRET, ttl)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--turn-url"):
        TurnRelay((), SECRET)
    secret_file = tmp_path / "turn.secret"
    secret_file.write_text(SECRET + "\n")  # as `echo` or `openssl rand -hex 32 >FILE` leave it
    assert read_secret_file(secret_file, "--turn-secret-file") == SECRET
    secret_file.write_text("\n")
    with pytest.raises(ValueError, match=f"--turn-secret-file {secret_file}: the file is empty"):
        read_secret_file(secret_file, "--turn-secret-file")
    with pytest.raises(ValueError, match="cannot read"):
        read_secret_file(tmp_path / "missing", "--turn-secret-file")
