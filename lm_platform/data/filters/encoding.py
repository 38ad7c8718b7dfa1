"""Broken encoding: replacement characters, C1 controls, or UTF-8 read as cp1252 (mojibake).

With `drop_mojibake: false` mojibake passes here and normalisation repairs it (ftfy) instead.
"""

from __future__ import annotations

from lm_platform.data.filters.base import Filter
from lm_platform.data.text import Doc


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

    def check(self, doc: Doc) -> str | None:
        text = doc.text
        if self.cfg.drop_mojibake and undo_mojibake(text) is not None:
            return "mojibake: UTF-8 text decoded as cp1252"
        bad = sum(c == "\ufffd" or 0x80 <= ord(c) <= 0x9F for c in text)
        frac = bad / max(len(text), 1)
        if frac > self.cfg.max_bad_char_fraction:
            return (
                f"{bad} replacement/C1 control chars (fraction {frac:.4f} > {self.cfg.max_bad_char_fraction})"
            )
        return None
