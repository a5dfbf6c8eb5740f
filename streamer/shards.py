"""Camera shards: ``serve --shard INDEX/COUNT`` runs only the cameras whose shard is INDEX, so that COUNT replicas
given the same cameras file run each camera exactly once between them.

A camera's shard comes from its name alone: the first 8 bytes of the name's SHA-256 as a big-endian integer, modulo
COUNT. The same on every process and machine (never Python's ``hash()``, which is salted per process), so every
replica agrees without talking to the others. ``auto/COUNT`` takes INDEX from the host name's trailing ``-N``: a
Kubernetes StatefulSet names its pods ``NAME-0``, ``NAME-1``, ... and a pod's host name is its name.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

ENV = "STREAMER_SHARD"
MAX_COUNT = 1024
_SPEC = re.compile(r"(?P<index>[0-9]+|auto)/(?P<count>[0-9]+)")
_ORDINAL = re.compile(r"-(?P<n>[0-9]+)$")  # at the end of the host name's first label


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) a camera of this name belongs to."""
    if count < 1:
        raise ValueError("the shard count must be at least 1")
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"the shard count must be within 1..{MAX_COUNT}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"the shard index must be within 0..{self.count - 1} for {self.count} shard(s), "
                             f"not {self.index}")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def owns(self, name: str) -> bool:
        return shard_of(name, self.count) == self.index

    def select(self, cameras: Iterable[T]) -> list[T]:
        """The cameras of this shard, in their order."""
        return [c for c in cameras if self.owns(c.name)]

    def as_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, hostname: str | None = None) -> Shard:
    """``INDEX/COUNT`` or ``auto/COUNT`` (INDEX from ``hostname``'s trailing ``-N``; default: this machine's)."""
    match = _SPEC.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"--shard {text!r}: expected INDEX/COUNT (e.g. 0/2) or auto/COUNT")
    count = Shard(0, int(match["count"])).count  # the count checked first, for auto too
    if match["index"] != "auto":
        return Shard(int(match["index"]), count)
    # The pod's name where the manifest passes it (the downward API): under hostNetwork a pod's host name is its
    # node's, which would give two replicas on similar nodes one index.
    host = (os.environ.get("POD_NAME", "").strip() or socket.gethostname()) if hostname is None else hostname
    # A Kubernetes pod's host name is its name (a StatefulSet keeps the ordinal at its end).
    found = _ORDINAL.search(host.split(".", 1)[0])
    if found is None:
        raise ValueError(f"--shard auto/{count}: the host name {host!r} does not end in -N (a StatefulSet pod is "
                         "NAME-0, NAME-1, ...); give the index, e.g. --shard 0/" + str(count))
    index = int(found["n"])
    if index >= count:
        raise ValueError(f"--shard auto/{count}: the host name {host!r} gives index {index}, but there are only "
                         f"{count} shard(s) (0..{count - 1}); make the StatefulSet's replicas equal COUNT")
    return Shard(index, count)


def shard_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The ``--shard`` default: ``$STREAMER_SHARD``, else one shard (every camera)."""
    env = os.environ if environ is None else environ
    return env.get(ENV, "").strip() or "0/1"


def describe(shard: Shard, mine: Sequence[str], configured: int) -> str:
    """The start-up line: which cameras this replica runs."""
    names = ", ".join(mine) if mine else "none"
    return f"shard {shard}: cameras {names} ({len(mine)} of {configured} in the cameras file and --camera)"
