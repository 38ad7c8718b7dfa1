"""Broken encoding: replacement characters, C1 controls, or UTF-8 read as cp1252 (mojibake).

With `drop_mojibake: false` mojibake passes here and normalisation repairs it (ftfy) instead. A stray
control character or two (a fraction up to `max_bad_char_fraction`) does not reject a document:
normalisation strips C1 controls from the text that is kept.
"""

from __future__ import annotations

import re

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.recipe.filter_settings import EncodingFilter as EncodingFilter


def _cp1252_reverse() -> dict[str, int]:
    table = {}
    for b in range(0x80, 0x100):
        try:
            table[bytes([b]).decode("cp1252")] = b
        except UnicodeDecodeError:
            table[chr(b)] = b  # the five undefined bytes pass through as C1 controls
    for b in range(0x80, 0xA0):  # the same bytes read as latin-1: C1 controls
        table.setdefault(chr(b), b)
    return table


_CP1252 = _cp1252_reverse()


# A UTF-8 lead byte read as cp1252/latin-1 (Â..ï) followed by a continuation byte read the same way:
# the pair every mis-decoded non-ASCII character starts with. Precomposed letters of real text (ầ, ế, ợ)
# lie outside both ranges.
MOJIBAKE_PAIR = re.compile(
    "[\u00c2-\u00ef][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201a\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)


_BAD_CHARS = re.compile("[\ufffd\u0080-\u009f]")


def mojibake_share(text: str) -> float:
    """Share of the text's characters in sequences ftfy's badness heuristic flags as mis-decoded UTF-8
    (part of a page broken, the rest intact: `undo_mojibake` needs the whole text to be broken). Only
    texts with a mis-decoded byte pair are looked at closely."""
    if not MOJIBAKE_PAIR.search(text):
        return 0.0
    from ftfy.badness import BADNESS_RE

    return sum(len(m.group(0)) for m in BADNESS_RE.finditer(text)) / max(len(text), 1)


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

    def check(self, doc: Doc) -> str | None:
        text = doc.text
        if self.cfg.drop_mojibake and undo_mojibake(text) is not None:
            return "mojibake: UTF-8 text decoded as cp1252"
        if self.cfg.drop_mojibake and not text.isascii():
            share = mojibake_share(text)
            if share > self.cfg.max_mojibake_share:
                return f"mojibake: {share:.4f} of characters in mis-decoded sequences > {self.cfg.max_mojibake_share}"
        bad = len(_BAD_CHARS.findall(text))
        frac = bad / max(len(text), 1)
        if frac > self.cfg.max_bad_char_fraction:
            return (
                f"{bad} replacement/C1 control chars (fraction {frac:.4f} > {self.cfg.max_bad_char_fraction})"
            )
        return None
