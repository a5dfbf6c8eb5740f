"""Recall and false positives of a detector against ground-truth boxes (the ../shared/testdata JSON format)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .boxes import from_xywh, iou_matrix


@dataclass(frozen=True)
class Match:
    faces: int
    found: int
    false_positives: int

    @property
    def recall(self) -> float:
        return self.found / self.faces if self.faces else 1.0


def match(truth_xyxy: npt.NDArray[np.float32], found_xyxy: npt.NDArray[np.float32], iou: float = 0.3) -> Match:
    """Greedy one-to-one matching, best IoU first. Unmatched detections count as false positives (some real
    background faces are not annotated in the test set, so this over-counts them)."""
    used_t, used_f = matched_pairs(truth_xyxy, found_xyxy, iou)
    return Match(truth_xyxy.shape[0], len(used_t), found_xyxy.shape[0] - len(used_f))


def matched_pairs(truth_xyxy: npt.NDArray[np.float32], found_xyxy: npt.NDArray[np.float32],
                  iou: float = 0.3) -> tuple[set[int], set[int]]:
    """Indices of the truth boxes and of the detections that greedy one-to-one matching pairs, best IoU first."""
    m = iou_matrix(truth_xyxy, found_xyxy)
    used_t: set[int] = set()
    used_f: set[int] = set()
    for flat in np.argsort(-m, axis=None):
        t, f = divmod(int(flat), m.shape[1])
        if m[t, f] < iou:
            break
        if t not in used_t and f not in used_f:
            used_t.add(t)
            used_f.add(f)
    return used_t, used_f


def load_truth(json_path: Path) -> npt.NDArray[np.float32]:
    return from_xywh(json.loads(json_path.read_text())["boxes"])


def annotated_images(folder: Path) -> Iterable[tuple[Path, Path]]:
    """(image, boxes JSON) pairs in a folder, sorted by name."""
    for js in sorted(folder.glob("*.json")):
        for ext in (".jpg", ".png", ".jpeg"):
            img = js.with_suffix(ext)
            if img.is_file():
                yield img, js
                break
