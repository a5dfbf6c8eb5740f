"""Host names as a ``Host`` header or ``--host`` gives them: parsed, and told loopback or not."""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The name or address in a ``Host`` value, without its port, lower-cased; None when it is malformed."""
    value = header.strip().lower()
    try:
        return str(ipaddress.ip_address(value))  # a bare address, IPv6 ones included (as --host gives them)
    except ValueError:
        pass
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:]
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        value = value[1:end]
        try:
            return str(ipaddress.IPv6Address(value.split("%")[0]))
        except ValueError:
            return None
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    name = name.rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name or None


def binds_loopback_only(host: str) -> bool:
    """Whether listening on ``host`` reaches loopback addresses alone: decided by what it resolves to, as the
    listener will bind it (a name such as ``cams.localhost`` may resolve anywhere), never by how it is spelled."""
    if not host.strip() or host.strip("[]") in ("0.0.0.0", "::"):
        return False
    try:
        found = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in found}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
