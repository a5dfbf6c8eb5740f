"""Which ``Host`` names this server answers to: a defence against DNS rebinding.

A page on ``rebind.attacker.example`` whose name is made to resolve to this server's address runs in the
attacker's origin, so the same-origin guard alone cannot tell it from the real page: the request's ``Host`` is
the attacker's name. Only loopback names, the addresses the server listens on (all of this machine's addresses
for a wildcard listen address, looked up again when an unknown address comes in, since they change) and the
names given with ``--allowed-host`` are served; anything else gets 421 before any route runs.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from typing import Any

import ifaddr
from aiohttp import web

from .hostnames import host_name, is_loopback
from .state import CONFIG, error_response

logger = logging.getLogger(__name__)

WILDCARDS = frozenset({"", "0.0.0.0", "::"})
REFRESH_S = 1.0  # how often an unknown IP address may trigger a new look at the machine's interfaces


def _machine_addresses() -> set[str]:
    found = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            found.add(str(ipaddress.ip_address(address.split("%")[0])))
    return found


class HostPolicy:
    def __init__(self, listen_host: str, allowed: tuple[str, ...] = ()) -> None:
        self.names = {n for n in (host_name(a) for a in allowed) if n}
        self.wildcard = listen_host in WILDCARDS
        listen = host_name(listen_host) if not self.wildcard else None
        self.addresses: set[str] = {listen} if listen else set()
        self._looked_at = 0.0
        if self.wildcard:
            self._look()
            self.names.add(socket.gethostname().lower())

    def _look(self) -> None:
        self._looked_at = time.monotonic()
        try:
            self.addresses = _machine_addresses()
        except OSError as exc:  # keep what was known
            logger.warning("[hosts] could not list this machine's addresses: %s", exc)

    def allows(self, header: str) -> bool:
        name = host_name(header)
        if name is None:
            return False
        if is_loopback(name) or name in self.names or name in self.addresses:
            return True
        if self.wildcard and time.monotonic() - self._looked_at > REFRESH_S:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False  # names are only ever the configured ones
            self._look()
            return name in self.addresses
        return False


HOSTS = web.AppKey("hosts", HostPolicy)


@web.middleware
async def allowed_host(request: web.Request, handler: Any) -> web.StreamResponse:
    # aiohttp gives the socket's own address when Host is missing (HTTP/1.0): that is an address we listen on.
    header = request.headers.get("Host")
    if header is not None and not request.app[HOSTS].allows(header):
        logger.warning("[hosts] refused %s %s from %s: Host %r is not this server's (--allowed-host adds a name)",
                       request.method, request.path, request.remote, header[:100])
        return error_response(421, "this server does not answer to that host name; its operator can add it with "
                                   "--allowed-host")
    response: web.StreamResponse = await handler(request)
    return response


def setup(app: web.Application) -> None:
    config = app[CONFIG]
    app[HOSTS] = HostPolicy(config.host, config.allowed_hosts)
