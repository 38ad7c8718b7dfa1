"""Share of the language's characteristic characters (Japanese-character ratio, Vietnamese-letter
ratio): a cheap language check that needs no model."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.recipe.filter_settings import SCRIPT_LANGS
from lm_platform.recipe.filter_settings import ScriptFilter as ScriptFilter

# Text in brackets or quotes: (...), [...], （...）, 「...」, 『...』, "..." and “...” (short spans only).
_QUOTED = re.compile(
    r"\([^()\n]{0,200}\)|\[[^\[\]\n]{0,200}]|（[^（）\n]{0,200}）|“[^“”\n]{0,200}”|\"[^\"\n]{0,200}\""
)
# Letters that only Vietnamese orthography puts on Latin letters: the extra vowels and đ, and tone marks.
_VI_BASE = set("ăâđêôơư")
_VI_TONES = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}  # grave, acute, tilde, hook, dot below


_MIN_LOWER = 20
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_JA_CHARS_PER_WORD = 2  # MeCab words in Japanese prose average about two characters


def _is_japanese(ch: str) -> bool:
    o = ord(ch)
    return 0x3040 <= o <= 0x30FF or 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or ch == "々"


_JAPANESE = re.compile("[\u3040-\u30ff\u4e00-\u9fff\u3400-\u4dbf々]")  # as _is_japanese
_ASCII = re.compile("[\x00-\x7f]")


# A letter outside the Latin blocks (Basic, Latin-1, Extended-A/B, Extended Additional).
_NON_LATIN = re.compile(r"[^\W\d_A-Za-z\u00c0-\u024f\u1e00-\u1eff]")


@lru_cache(maxsize=1 << 16)
def _is_latin_word(word: str) -> bool:
    return not _NON_LATIN.search(word)


@lru_cache(maxsize=1 << 16)
def _is_vietnamese_syllable(word: str) -> bool:
    decomposed = unicodedata.normalize("NFD", word.lower())
    return any(c in _VI_TONES for c in decomposed) or any(c in _VI_BASE for c in word.lower())


def script_ratio(text: str, lang: str) -> float:
    """How much of the text is written the way `lang` is written, in [0, 1].

    Text in brackets or quotes is left out: a quoted foreign name or script is not the text's language.
    ja: kana and kanji among letters. vi: words carrying Vietnamese-only letters or tone marks among
    words made of Latin letters (about 0.5 or more in Vietnamese prose, near 0 in English).
    en: ASCII letters among letters.
    """
    text = _QUOTED.sub(" ", text)  # quoted or bracketed foreign names and scripts are not the prose
    letters = "".join(filter(str.isalpha, text))
    if not letters:
        return 0.0
    if lang == "ja":
        # A Latin-script word (a name, a term, code: "Bluetooth", "ISO") is one word of the sentence, so
        # it weighs as a Japanese word does (about two characters), not one unit per letter: a lead
        # about "Bluetooth Basic Rate/Enhanced Data Rate" is Japanese. English text has no kana or kanji.
        japanese = len(_JAPANESE.findall(letters))  # _is_japanese, over letters
        latin_letters = len(_ASCII.findall(letters))
        latin_words = len(_LATIN_WORD.findall(text))
        other = len(letters) - japanese - latin_letters
        weighed = japanese + other + _JA_CHARS_PER_WORD * latin_words
        return japanese / weighed if weighed else 0.0
    if lang == "vi":
        words = [w for w in text.split() if any(c.isalpha() for c in w)]
        latin = [w for w in words if _is_latin_word(w)]
        # Words in other scripts (an article about Chinese characters or Cyrillic) neither count for nor
        # against, unless they are most of the text.
        if not words or len(latin) < 0.5 * len(words):
            return 0.0
        # Capitalised words are names (and sentence starts): a list of romanised Japanese towns or foreign
        # players says nothing about the language around it. Lower-case words decide when there are
        # enough of them (`_MIN_LOWER`); a text of names only is judged on all its words.
        lower = [w for w in latin if not w.lstrip("([\"'“‘")[:1].isupper()]
        counted = lower if len(lower) >= _MIN_LOWER else latin
        return sum(map(_is_vietnamese_syllable, counted)) / len(counted)
    if lang == "en":
        return sum(c.isascii() for c in letters) / len(letters)
    raise ValueError(f"no script rule for language '{lang}' (have: {sorted(SCRIPT_LANGS)})")


class Script(Filter):
    name = "script"

    def __init__(self, cfg, lang: str):
        if lang not in SCRIPT_LANGS and not cfg.letters:
            raise ValueError(
                f"script filter: no rule for language '{lang}' (have: {sorted(SCRIPT_LANGS)}); set its 'letters'"
            )
        super().__init__(cfg, lang)
        self.letters = re.compile(f"[{cfg.letters}]") if cfg.letters else None

    def check(self, doc: Doc) -> str | None:
        if self.letters is not None:
            text = _QUOTED.sub(" ", doc.text)
            letters = [c for c in text if c.isalpha()]
            ratio = sum(bool(self.letters.match(c)) for c in letters) / len(letters) if letters else 0.0
        else:
            ratio = script_ratio(doc.text, self.lang)
        if ratio >= self.cfg.min_ratio:
            return None
        return f"{self.lang} script ratio {ratio:.2f} < {self.cfg.min_ratio}"
