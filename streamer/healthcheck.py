"""``python -m streamer.healthcheck``: the container's HEALTHCHECK; exit 0 only when this machine's service is ready.

It asks ``/healthz`` on loopback at ``$STREAMER_PORT`` (the port ``serve`` listens on by default), over http and,
when the service answers only TLS (``--tls-cert``), over https. Only the standard library: Docker runs it every
interval, so it must start fast and cheaply.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys

DEFAULT_PORT = 9002
MAX_BODY = 8 * 1024 * 1024
PORT_ENV = "STREAMER_PORT"


def default_port() -> int:
    """``serve``'s port when ``--port`` is not given: ``$STREAMER_PORT``, else 9002."""
    value = os.environ.get(PORT_ENV, "").strip()
    if not value:
        return DEFAULT_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{PORT_ENV}={value!r} is not a TCP port (1-65535)")
    return int(value)


def _ask(port: int, tls: bool, timeout: float) -> tuple[int, bytes]:
    connection: http.client.HTTPConnection
    if tls:
        # Talking to our own process over loopback: its certificate names the public host, not 127.0.0.1.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        # The whole body (many cameras make it long), within a bound a healthy service never nears.
        return response.status, response.read(MAX_BODY)
    finally:
        connection.close()


def probe(port: int, timeout: float = 4.0) -> tuple[bool, str]:
    """(ready, one line saying why) for the service on loopback at ``port``."""
    try:
        try:
            status, body = _ask(port, tls=False, timeout=timeout)
        except (http.client.BadStatusLine, ConnectionResetError, http.client.RemoteDisconnected):
            status, body = _ask(port, tls=True, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"no answer on 127.0.0.1:{port}: {exc}"
    try:
        health = json.loads(body)
    except ValueError:
        return False, f"/healthz answered {status} without JSON"
    ready = status == 200 and health.get("ready") is True
    error = f" ({health['error']})" if health.get("error") else ""
    return ready, f"/healthz {status}: {health.get('status')}{error}"


def main() -> int:
    try:
        port = default_port()
    except ValueError as exc:
        print(exc)
        return 1
    ready, why = probe(port)
    print(why)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
