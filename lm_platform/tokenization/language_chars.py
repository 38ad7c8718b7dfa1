"""A language's characters V: the letters whose presence lets vocabulary extension change an encoding.

EEVE (`eeve.py`) accepts a new token only when it holds a whole character of V; the invariant probe
(`probe.py`) checks that text without any character of V encodes exactly as the base encoded it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

_VI_VOWELS = "aăâeêioôơuưy"
_VI_TONES = ("\u0300", "\u0301", "\u0309", "\u0303", "\u0323")  # grave, acute, hook, tilde, dot below


def _vi_chars() -> frozenset[str]:
    lower = {unicodedata.normalize("NFC", v + t) for v in _VI_VOWELS for t in _VI_TONES}
    lower |= set("ăâêôơưđ")
    assert all(len(c) == 1 for c in lower)
    return frozenset(lower | {c.upper() for c in lower})


# Vietnamese letters outside ASCII (NFC; NFD text is recognised through normalisation): the vowels with
# any of the five tone marks, the bare ă â ê ô ơ ư, and đ, both cases. 134 characters.
VI_CHARS = _vi_chars()
# Every Vietnamese letter (ASCII ones included), for reports and tests.
VI_LETTERS = VI_CHARS | set("aeiouybcdfghjklmnpqrstvwxz") | set("AEIOUYBCDFGHJKLMNPQRSTVWXZ")


def _generic_char(ch: str) -> bool:
    return not ch.isascii() and unicodedata.category(ch)[0] in "LM"


LANGUAGE_CHARS: dict[str, Callable[[str], bool]] = {"vi": VI_CHARS.__contains__}


def language_char(language: str) -> Callable[[str], bool]:
    """Membership in V for `language`: its letters outside ASCII. Languages without a defined set fall
    back to every non-ASCII letter (a weaker invariant: only text without such letters is unchanged)."""
    return LANGUAGE_CHARS.get(language, _generic_char)


def has_language_char(text: str, language: str) -> bool:
    """Whether `text` holds a character of V (in NFC or NFD form)."""
    member = language_char(language)
    return any(member(ch) for ch in unicodedata.normalize("NFC", text))
