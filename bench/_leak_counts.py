"""The judges' counts in benchmark results and reports: per judge, summed, and why they fail "0 face-frames back"
(the judging itself is testkit.judging). Plain dicts in, so that bench.render uses them on JSON results too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

JUDGES = ("pixels", "identity", "detector")


def judge_thresholds() -> dict[str, float]:
    """What each judge counts as a leak (testkit.judges), for a result's ``judge_thresholds``."""
    from testkit.judges import DETECTOR_THRESHOLD, IDENTITY_LEAK, PIXEL_LEAK

    return {"pixels": PIXEL_LEAK, "identity": IDENTITY_LEAK, "detector": DETECTOR_THRESHOLD}


def leaked_of(data: dict[str, Any] | None) -> dict[str, int] | None:
    """``face_frames_leaked`` of a result, or None where nothing was judged."""
    if not data or not data.get("face_frames_leaked"):
        return None
    return {k: int(v) for k, v in data["face_frames_leaked"].items()}


def checked_of(data: dict[str, Any] | None) -> dict[str, int]:
    judges = ((data or {}).get("leak_report") or {}).get("judges") or {}
    return {name: int((judges.get(name) or {}).get("checked", 0)) for name in JUDGES}


def add_counts(results: Sequence[dict[str, Any]], key: str) -> dict[str, int] | None:
    """The sums of ``face_frames_leaked`` (key ``leaked``) or of the judges' checks (``checked``) over results;
    None when one of them was not judged."""
    total: dict[str, int] = {}
    for data in results:
        counts = leaked_of(data) if key == "leaked" else (checked_of(data) if leaked_of(data) else None)
        if counts is None:
            return None
        for name, value in counts.items():
            total[name] = total.get(name, 0) + value
    return total if results else None


def per_judge(counts: dict[str, int] | None) -> str:
    """``pixels / identity / detector`` counts, or a dash."""
    if counts is None:
        return "—"
    return " / ".join(str(counts.get(name, 0)) for name in JUDGES)


def leak_problems(leaked: dict[str, int] | None, checked: dict[str, int] | None) -> list[str]:
    """Why these counts fail "0 face-frames back, by every judge"; empty when they pass."""
    if leaked is None or checked is None:
        return ["not judged"]
    problems = []
    if any(leaked.get(name, 0) for name in JUDGES):
        problems.append("face-frames back: " + ", ".join(f"{name} {leaked.get(name, 0)}" for name in JUDGES))
    problems += [f"the {name} judge checked no face" for name in JUDGES if not checked.get(name, 0)]
    return problems


def no_face_back(data: dict[str, Any]) -> tuple[bool, str]:
    """Whether a live session sent 0 face-frames back by every judge, and why not. A frame back without a valid code
    (a mask over the code) is judged against the frame it looks most like among those sent between its
    neighbours; one that could not be kept for that escapes the judges, and fails."""
    problems = leak_problems(leaked_of(data), checked_of(data))
    if problems == ["not judged"] and not data.get("ground_truth", True):
        problems = ["not judged: no ground truth"]
    unjudged = int(data.get("invalid_codes", 0)) - int(data.get("codeless_judged", 0))
    if unjudged > 0:
        problems.append(f"{unjudged} frame(s) back without a code (not judged)")
    return not problems, "; ".join(problems)
