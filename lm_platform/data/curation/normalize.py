"""Text normalisation per language: mojibake repair, Unicode form, control characters, whitespace.

Mojibake (UTF-8 read as cp1252/latin-1) is repaired with ftfy when the language asks for it; ftfy's own
Unicode normalisation is off, as the language's form (NFC for Vietnamese, NFKC for Japanese) is applied
right after. C1 control characters (U+0080..U+009F) are the trace of a broken encoding: the `encoding`
filter judges them on the raw text first (many: the document is dropped), and normalisation strips the
stray ones that remain, so one control character does not cost a whole article.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# C0 controls except tab and newline, DEL, C1 controls, zero-width characters and the BOM.
_DROP = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u3000\u2000-\u200a\u202f\u205f]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# A UTF-8 lead byte read as cp1252/latin-1 followed by a continuation byte read the same way (see
# lm_platform.data.curation.filters.encoding.MOJIBAKE_PAIR): ftfy has something to repair only where one occurs.
_MOJIBAKE_PAIR = re.compile(
    "[\u00c2-\u00ef][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201a\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)


@lru_cache(maxsize=1)
def _ftfy_config():
    import ftfy

    # Only undo encoding mix-ups; every other change is normalisation's own business.
    return ftfy.TextFixerConfig(
        unescape_html=False,
        remove_terminal_escapes=False,
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=False,
        fix_surrogates=True,
        remove_control_chars=False,
        normalization=None,
        explain=False,
    )


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 decoded with the wrong codec (ftfy); text that is not mojibake comes back unchanged."""
    if text.isascii() or not _MOJIBAKE_PAIR.search(text):  # nothing mis-decoded to repair: skip ftfy
        return text
    import ftfy

    return ftfy.fix_text(text, _ftfy_config())


def normalize_text(text: str, unicode_form: str = "NFC", repair_mojibake: bool = False) -> str:
    if repair_mojibake:
        text = fix_mojibake(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize(unicode_form, text)
    text = _DROP.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
