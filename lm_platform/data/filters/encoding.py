"""Broken encoding: replacement characters, C1 controls, or UTF-8 read as cp1252 (mojibake).

With `drop_mojibake: false` mojibake passes here and normalisation repairs it (ftfy) instead. A stray
control character or two (a fraction up to `max_bad_char_fraction`) does not reject a document:
normalisation strips C1 controls from the text that is kept.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lm_platform.data.filters.base import Filter
from lm_platform.data.text import Doc
from lm_platform.recipe.base import StrictConfig


class EncodingFilter(StrictConfig):
    """Broken encoding: replacement characters, C1 controls, or UTF-8 read as cp1252 (mojibake)."""

    name: Literal["encoding"] = "encoding"
    max_bad_char_fraction: float = Field(
        0.001,
        ge=0,
        le=1,
        description="Replacement/C1 control characters tolerated (a stray one is stripped by normalisation)",
    )
    max_mojibake_share: float = Field(
        0.002, ge=0, le=1, description="Characters in mis-decoded sequences tolerated (drop_mojibake)"
    )
    drop_mojibake: bool = Field(True, description="False: let normalisation repair mojibake (ftfy)")


def _cp1252_reverse() -> dict[str, int]:
    table = {}
    for b in range(0x80, 0x100):
        try:
            table[bytes([b]).decode("cp1252")] = b
        except UnicodeDecodeError:
            table[chr(b)] = b  # the five undefined bytes pass through as C1 controls
    return table


_CP1252 = _cp1252_reverse()


def mojibake_share(text: str) -> float:
    """Share of the text's characters in sequences ftfy's badness heuristic flags as mis-decoded UTF-8
    (part of a page broken, the rest intact: `undo_mojibake` needs the whole text to be broken)."""
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
        bad = sum(c == "\ufffd" or 0x80 <= ord(c) <= 0x9F for c in text)
        frac = bad / max(len(text), 1)
        if frac > self.cfg.max_bad_char_fraction:
            return (
                f"{bad} replacement/C1 control chars (fraction {frac:.4f} > {self.cfg.max_bad_char_fraction})"
            )
        return None
