"""Every piece of the page's text exists in English and Korean: the keys of web/i18n.js's two dictionaries are the
same, and every key the page uses (data-i18n* in the HTML, t("...") in the modules) is in them."""

from __future__ import annotations

import re

from conftest import REPO_ROOT

WEB = REPO_ROOT / "web"
ENTRY = re.compile(r'^\s*"([a-zA-Z0-9_.-]+)":\s', re.MULTILINE)


def dictionaries() -> dict[str, set[str]]:
    source = (WEB / "i18n.js").read_text(encoding="utf-8")
    body = source[source.index("export const dictionaries"):source.index("export const LANGUAGES")]
    en_at, ko_at = body.index("\n  en: {"), body.index("\n  ko: {")
    return {"en": set(ENTRY.findall(body[en_at:ko_at])), "ko": set(ENTRY.findall(body[ko_at:]))}


def test_english_and_korean_have_the_same_keys() -> None:
    found = dictionaries()
    assert len(found["en"]) > 100
    assert found["en"] - found["ko"] == set(), "missing in Korean"
    assert found["ko"] - found["en"] == set(), "missing in English"


def test_every_key_the_page_uses_is_translated() -> None:
    known = dictionaries()["en"]
    used = set()
    for page in WEB.glob("*.html"):
        used |= set(re.findall(r'data-i18n(?:-[a-z-]+)?="([^"]+)"', page.read_text(encoding="utf-8")))
    for module in WEB.glob("*.js"):
        used |= set(re.findall(r'\bt\(\s*"([a-zA-Z0-9_.-]+)"', module.read_text(encoding="utf-8")))
    assert len(used) > 50
    assert sorted(used - known) == []
