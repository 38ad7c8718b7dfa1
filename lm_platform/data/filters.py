"""Document filters. Each is a small class configured by its recipe entry, called on one text, and
returning None to keep it or a short reason to drop it. `on_raw` filters see the text before
normalisation (broken encoding is a property of the input, and NFKC would blur it)."""

from __future__ import annotations

import unicodedata

from lm_platform.recipe.schema import (
    SCRIPT_LANGS,
    BoilerplateFilter,
    EncodingFilter,
    FilterConfig,
    LengthFilter,
    ScriptFilter,
)

# Letters that only Vietnamese orthography puts on Latin letters: the extra vowels and đ, and tone marks.
_VI_BASE = set("ăâđêôơư")
_VI_TONES = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}  # grave, acute, tilde, hook, dot below


class Filter:
    name = "filter"
    on_raw = False

    def __call__(self, text: str) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError


class Length(Filter):
    name = "length"

    def __init__(self, cfg: LengthFilter, lang: str):
        self.min_chars, self.max_chars = cfg.min_chars, cfg.max_chars

    def __call__(self, text: str) -> str | None:
        n = len(text)
        if n < self.min_chars:
            return f"{n} chars < min {self.min_chars}"
        if n > self.max_chars:
            return f"{n} chars > max {self.max_chars}"
        return None


def _is_japanese(ch: str) -> bool:
    o = ord(ch)
    return 0x3040 <= o <= 0x30FF or 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or ch == "々"


def _is_vietnamese_syllable(word: str) -> bool:
    decomposed = unicodedata.normalize("NFD", word.lower())
    return any(c in _VI_TONES for c in decomposed) or any(c in _VI_BASE for c in word.lower())


def script_ratio(text: str, lang: str) -> float:
    """How much of the text is written the way `lang` is written, in [0, 1].

    ja: kana and kanji among letters. vi: words carrying Vietnamese-only letters or tone marks among
    words made of Latin letters (about 0.5 or more in Vietnamese prose, near 0 in English).
    en: ASCII letters among letters.
    """
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    if lang == "ja":
        return sum(map(_is_japanese, letters)) / len(letters)
    if lang == "vi":
        words = [w for w in text.split() if any(c.isalpha() for c in w)]
        latin = [w for w in words if all(not c.isalpha() or unicodedata.name(c, "").startswith("LATIN") for c in w)]
        if not words or len(latin) < 0.9 * len(words):
            return 0.0
        return sum(map(_is_vietnamese_syllable, latin)) / len(latin)
    if lang == "en":
        return sum(c.isascii() for c in letters) / len(letters)
    raise ValueError(f"no script rule for language '{lang}' (have: {sorted(SCRIPT_LANGS)})")


class Script(Filter):
    name = "script"

    def __init__(self, cfg: ScriptFilter, lang: str):
        if lang not in SCRIPT_LANGS:
            raise ValueError(f"script filter: no rule for language '{lang}' (have: {sorted(SCRIPT_LANGS)})")
        self.lang, self.min_ratio = lang, cfg.min_ratio

    def __call__(self, text: str) -> str | None:
        ratio = script_ratio(text, self.lang)
        return None if ratio >= self.min_ratio else f"{self.lang} script ratio {ratio:.2f} < {self.min_ratio}"


class Boilerplate(Filter):
    name = "boilerplate"

    def __init__(self, cfg: BoilerplateFilter, lang: str):
        self.cfg = cfg
        self.markers = tuple(m.lower() for m in cfg.markers)

    def __call__(self, text: str) -> str | None:
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if len(lines) < 2:
            return None
        short = sum(len(ln) < self.cfg.short_line_chars for ln in lines) / len(lines)
        if short > self.cfg.max_short_line_fraction:
            return f"short-line fraction {short:.2f} > {self.cfg.max_short_line_fraction}"
        marked = sum(any(m in ln.lower() for m in self.markers) for ln in lines) / len(lines)
        if marked > self.cfg.max_marker_line_fraction:
            return f"boilerplate-marker line fraction {marked:.2f} > {self.cfg.max_marker_line_fraction}"
        return None


def _cp1252_reverse() -> dict[str, int]:
    table = {}
    for b in range(0x80, 0x100):
        try:
            table[bytes([b]).decode("cp1252")] = b
        except UnicodeDecodeError:
            table[chr(b)] = b  # the five undefined bytes pass through as C1 controls
    return table


_CP1252 = _cp1252_reverse()


def undo_mojibake(text: str) -> str | None:
    """If `text` is UTF-8 that was decoded as cp1252/latin-1, the original text; else None."""
    if text.isascii():
        return None
    out = bytearray()
    for ch in text:
        o = ord(ch)
        if o < 0x80:
            out.append(o)
        elif ch in _CP1252:
            out.append(_CP1252[ch])
        else:
            return None
    try:
        fixed = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return fixed if fixed != text else None


class Encoding(Filter):
    name = "encoding"
    on_raw = True

    def __init__(self, cfg: EncodingFilter, lang: str):
        self.max_bad = cfg.max_bad_char_fraction

    def __call__(self, text: str) -> str | None:
        if undo_mojibake(text) is not None:
            return "mojibake: UTF-8 text decoded as cp1252"
        bad = sum(c == "\ufffd" or 0x80 <= ord(c) <= 0x9F for c in text)
        frac = bad / max(len(text), 1)
        if frac > self.max_bad:
            return f"{bad} replacement/C1 control chars (fraction {frac:.4f} > {self.max_bad})"
        return None


_CLASSES: dict[type, type[Filter]] = {
    LengthFilter: Length,
    ScriptFilter: Script,
    BoilerplateFilter: Boilerplate,
    EncodingFilter: Encoding,
}


def build_filter(cfg: FilterConfig, lang: str) -> Filter:
    return _CLASSES[type(cfg)](cfg, lang)
