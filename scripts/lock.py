"""Write requirements/cpu.lock: the exact versions installed in .venv for the project's CPU install (extras cpu,dev).

    .venv/bin/python scripts/lock.py > requirements/cpu.lock

It starts from the requirements in pyproject.toml (the installed metadata of an editable install goes stale) and
walks the installed metadata from there down, so a package installed into .venv by hand is not locked.
scripts/venv.sh installs with this file as pip constraints, and scripts/test audits it with pip-audit.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
EXTRAS = ("cpu", "dev")


def project_requirements(extras: tuple[str, ...]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e])]


def closure(requirements: list[str]) -> dict[str, str]:
    """{distribution name as installed: version} for ``requirements`` and everything they need, transitively."""
    found: dict[str, str] = {}
    todo = [Requirement(r) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        found[dist.metadata["Name"]] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append(sub)
    return found


def main() -> int:
    pins = closure(project_requirements(EXTRAS))
    print(f"# Exact versions for `pip install -e .[{','.join(EXTRAS)}]` (Python {sys.version_info.major}."
          f"{sys.version_info.minor}, Linux x86_64); regenerate with: .venv/bin/python scripts/lock.py")
    for name in sorted(pins, key=lambda n: re.sub(r"[-_.]+", "-", n).lower()):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
