"""Waiting for a server started for a live run to answer ``GET /healthz`` 200 (the model loads first)."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence

from aiohttp import ClientSession, ClientTimeout


async def wait_healthy(http: ClientSession, base_url: str, limit_s: float,
                       alive: Callable[[], bool] | None = None) -> None:
    """Poll ``base_url/healthz`` until it answers 200; TimeoutError after ``limit_s``. ``alive()`` False: the
    server exited, stop waiting (RuntimeError)."""
    deadline = time.monotonic() + limit_s
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("the service exited before it was ready")
        try:
            async with http.get(base_url + "/healthz") as answer:
                if answer.status == 200:
                    return
                last = f"HTTP {answer.status}"
        except Exception as exc:  # not listening yet
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{base_url}/healthz not ready after {limit_s:.0f} s ({last})")


async def _wait(base_url: str, limit_s: float) -> None:
    async with ClientSession(timeout=ClientTimeout(total=3)) as http:
        await wait_healthy(http, base_url, limit_s)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testkit.readiness URL [SECONDS]``: for a process that waits from inside the namespace."""
    parser = argparse.ArgumentParser(prog="python -m testkit.readiness")
    parser.add_argument("base_url")
    parser.add_argument("seconds", type=float, nargs="?", default=180.0)
    args = parser.parse_args(argv)
    asyncio.run(_wait(args.base_url, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
