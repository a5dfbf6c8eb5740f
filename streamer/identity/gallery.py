"""The enrolled faces of a stream: names and their embeddings, matched by Euclidean distance.

Only embeddings are kept (128 numbers per photo or live capture), never a picture. They live in memory, or in a
file the operator names (JSON, written atomically and 0600), and never reach a log line.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import EMBEDDING_SIZE, Embedding

# dlib's model separates people at 0.6 (99.38% on LFW). A face is taken as an enrolled person only well inside
# that: at 0.5 no stranger of the benchmark set (bench.allowlist) was kept, and the enrolled faces were kept in
# most frames (BENCHMARKS.md has the rates).
MATCH_DISTANCE = 0.5
# The other way round, for "hide only these": a face is shown only when it is clearly someone else.
STRANGER_DISTANCE = 0.6
MAX_PEOPLE = 64
MAX_FILE_BYTES = 16 * 2**20  # 64 people x 32 embeddings x 128 numbers fit many times over
MAX_EMBEDDINGS_PER_PERSON = 32
NAME = re.compile(r"[^\x00-\x1f\x7f/]{1,64}")


def check_name(name: str) -> None:
    """A name is shown on the page and used in a URL path (DELETE .../faces/NAME): printable, no '/', not '.' or
    '..' (which URL normalisation turns into another path), no invisible formatting (a right-to-left override
    would show one name and be another)."""
    if (not NAME.fullmatch(name) or name.strip() in (".", "..") or not name.strip()
            or any(unicodedata.category(c) == "Cf" for c in name)):
        raise ValueError("a name is 1 to 64 printable characters, without '/' or invisible formatting, "
                         "and not '.' or '..'")


@dataclass(frozen=True)
class Match:
    name: str | None  # the closest enrolled person, None when there is none
    distance: float  # to that person's closest embedding; inf with nobody enrolled
    version: int = 0  # the gallery's version this was matched against (read under the same lock)


class Gallery:
    """Thread-safe: the API adds and removes while frame threads match."""

    def __init__(self) -> None:
        self._people: dict[str, list[Embedding]] = {}
        self._lock = threading.Lock()
        self.version = 0  # bumps on every change, so decisions made against an older gallery are redone

    def __len__(self) -> int:
        return len(self._people)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._people)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {name: len(embeddings) for name, embeddings in sorted(self._people.items())}

    def add(self, name: str, embedding: Embedding) -> None:
        check_name(name)
        vector = np.asarray(embedding, np.float32).reshape(-1)
        if vector.shape != (EMBEDDING_SIZE,) or not np.isfinite(vector).all():
            raise ValueError(f"an embedding is {EMBEDDING_SIZE} finite numbers")
        with self._lock:
            if name not in self._people and len(self._people) >= MAX_PEOPLE:
                raise ValueError(f"at most {MAX_PEOPLE} people may be enrolled")
            embeddings = self._people.setdefault(name, [])
            if len(embeddings) >= MAX_EMBEDDINGS_PER_PERSON:
                raise ValueError(f"at most {MAX_EMBEDDINGS_PER_PERSON} photos or captures per person")
            embeddings.append(vector)
            self.version += 1

    def remove(self, name: str) -> bool:
        with self._lock:
            gone = self._people.pop(name, None) is not None
            self.version += gone
            return gone

    def clear(self) -> None:
        with self._lock:
            self._people.clear()
            self.version += 1

    def match(self, embedding: Embedding) -> Match:
        vector = np.asarray(embedding, np.float32).reshape(1, -1)
        with self._lock:
            best: Match = Match(None, math.inf, self.version)
            for name, embeddings in self._people.items():
                distance = float(np.linalg.norm(np.stack(embeddings) - vector, axis=1).min())
                if distance < best.distance:
                    best = Match(name, distance, self.version)
        return best

    # -- file --------------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"format": "face-streamer-gallery", "version": 1, "model": "dlib_face_recognition_resnet_model_v1",
                    "people": {name: [[round(float(v), 6) for v in e] for e in embeddings]
                               for name, embeddings in self._people.items()}}

    def save(self, path: Path) -> None:
        """Write the gallery to ``path`` atomically, readable by this user only."""
        data = json.dumps(self.to_json(), separators=(",", ":")).encode()
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> Gallery:
        """A gallery from a file ``save`` wrote; ValueError saying what is wrong (never quoting the numbers)."""
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"{path}: not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise ValueError(f"{path}: larger than a gallery can be ({MAX_FILE_BYTES // 2**20} MiB)")
            data = json.loads(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
        except ValueError:
            raise ValueError(f"{path}: not a gallery file (not JSON)") from None
        if not isinstance(data, dict) or data.get("format") != "face-streamer-gallery" \
                or not isinstance(data.get("people"), dict):
            raise ValueError(f"{path}: not a gallery file (python -m streamer enroll writes them)")
        gallery = cls()
        for name, embeddings in data["people"].items():
            if not isinstance(embeddings, list):
                raise ValueError(f"{path}: the embeddings of {name!r} are not a list")
            for embedding in embeddings:
                try:
                    gallery.add(str(name), np.asarray(embedding, np.float32))
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{path}: {name!r}: {exc}") from None
        return gallery
