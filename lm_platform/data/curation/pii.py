"""PII redaction: e-mail addresses, IP addresses, and phone numbers in Vietnamese, Japanese and
international (+CC) formats are replaced by placeholders and counted.

Phone patterns are anchored on the national formats so that ordinary numbers (years, prices) stay, and
numbers labelled or shaped as identifiers (ISBN, ISSN, DOI, catalogue numbers) are never taken for
phones: Vietnamese numbers start with 0 or +84 and a mobile/landline prefix and have 10 digits; Japanese
numbers start with 0 or +81 and are written in groups (03-1234-5678, 090-1234-5678, 0120-123-456).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lm_platform.recipe.filters import PiiConfig

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.]|\.\d)")
_IPV6 = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![:\w])")
_SEP = r"[\s.\-]?"
_PHONES = {
    # 0 or +84, then a 9-digit subscriber number starting with a mobile (3,5,7,8,9) or landline (2) prefix
    "vi": re.compile(
        rf"(?<![\d+])(?:\+84{_SEP}|\(\+84\){_SEP}?|0)[235789]\d{{1,2}}(?:{_SEP}\d{{2,4}}){{2,3}}(?!\d)"
    ),
    # 0 or +81, area/mobile code, then two groups: 03-1234-5678, 090-1234-5678, 0120-123-456
    "ja": re.compile(
        r"(?<![\d+])(?:\+81[\s\-]?|0)(?:\d{1,4})[\-‐－(（)）\s]\d{1,4}[\-‐－)）\s]\d{3,4}(?!\d)"
    ),
    "intl": re.compile(r"(?<![\w+])\+[1-9]\d{0,2}[\s\-]?\(?\d{1,4}\)?(?:[\s\-]?\d{2,4}){2,4}(?!\d)"),
}


# Labels of numbers that are not phone numbers: book, serial and document identifiers, and the like.
_ID_LABEL = re.compile(
    r"(?:ISBN(?:-1[03])?|ISSN|DOI|OCLC|LCCN|PMID|arXiv|ISMN|EAN|UPC|ASIN|No\.|Nr\.|ID|Mã số|MS|"
    r"số hiệu|番号|コード)[\s:：#.\-]*$",
    re.IGNORECASE,
)
_ISBN_SHAPE = re.compile(r"^(?:97[89][\s\-])?\d{1,5}[\s\-]\d{1,7}[\s\-]\d{1,7}[\s\-][\dX]$")


def is_identifier(text: str, start: int, end: int) -> bool:
    """Whether the number at text[start:end] is an identifier, not a phone: labelled as one (ISBN, ISSN,
    DOI, ...) just before it, shaped like a hyphenated ISBN, or part of a longer identifier (a DOI path,
    an ISBN's check digit right after it)."""
    if _ID_LABEL.search(text[max(0, start - 24) : start]):
        return True
    if _ISBN_SHAPE.match(text[start:end]):
        return True
    before = text[start - 1 : start]
    if before and (before in "/#" or (before.isascii() and before.isalnum())):
        return True
    after = text[end : end + 2]
    return bool(after) and (after[0] in "/X" or (after[0] == "-" and after[1:2].isalnum()))


@dataclass
class PiiCounts:
    emails: int = 0
    ip_addresses: int = 0
    phones: int = 0
    docs_changed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "emails": self.emails,
            "ip_addresses": self.ip_addresses,
            "phones": self.phones,
            "docs_changed": self.docs_changed,
        }


def _valid_phone(match: str, kind: str) -> bool:
    digits = re.sub(r"\D", "", match)
    if kind == "vi":
        national = digits[2:] if match.lstrip("(").startswith("+84") else digits[1:]
        return len(national) == 9
    if kind == "ja":
        national = digits[2:] if match.startswith("+81") else digits[1:]
        return 9 <= len(national) <= 10
    return 8 <= len(digits) <= 15


class Redactor:
    def __init__(self, cfg: PiiConfig):
        self.cfg = cfg

    def redact(self, text: str, counts: PiiCounts | None = None) -> str:
        counts = counts if counts is not None else PiiCounts()
        original = text
        if self.cfg.emails:
            text, n = _EMAIL.subn(self.cfg.email_placeholder, text)
            counts.emails += n
        if self.cfg.ip_addresses:
            text, n = _IPV4.subn(self.cfg.ip_placeholder, text)
            text, m = _IPV6.subn(self.cfg.ip_placeholder, text)
            counts.ip_addresses += n + m
        for kind in self.cfg.phones:
            found = 0

            def sub(m: re.Match, kind: str = kind, text: str = text) -> str:
                nonlocal found
                if _valid_phone(m.group(0), kind) and not is_identifier(text, m.start(), m.end()):
                    found += 1
                    return self.cfg.phone_placeholder
                return m.group(0)

            text = _PHONES[kind].sub(sub, text)
            counts.phones += found
        if text != original:
            counts.docs_changed += 1
        return text
