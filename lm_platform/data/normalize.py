"""Text normalisation per language: Unicode form, control characters, whitespace.

C1 control characters (U+0080..U+009F) are kept on purpose: in real text they are almost always the
trace of a broken encoding, and the `encoding` filter judges them.
"""

from __future__ import annotations

import re
import unicodedata

# C0 controls except tab and newline, DEL, zero-width characters and the BOM.
_DROP = re.compile("[\x00-\x08\x0b-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u3000\u2000-\u200a\u202f\u205f]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str, unicode_form: str = "NFC") -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize(unicode_form, text)
    text = _DROP.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
