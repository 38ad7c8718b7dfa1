"""Document filters, one concern per module, built from the recipe's filter entries.

`build_filter(cfg, lang)` turns a recipe entry into a filter for one language; each filter's
`check(doc)` returns None to keep the document or a short reason to drop it.
"""

from __future__ import annotations

from lm_platform.data.filters.base import Filter
from lm_platform.data.filters.boilerplate import Boilerplate
from lm_platform.data.filters.c4 import C4
from lm_platform.data.filters.encoding import Encoding, undo_mojibake
from lm_platform.data.filters.fineweb import FineWeb
from lm_platform.data.filters.flagged_words import FlaggedWords
from lm_platform.data.filters.gopher_quality import GopherQuality
from lm_platform.data.filters.gopher_repetition import GopherRepetition
from lm_platform.data.filters.language_id import LanguageId, identify
from lm_platform.data.filters.length import Length
from lm_platform.data.filters.script import Script, script_ratio
from lm_platform.data.filters.url_domain import UrlDomain
from lm_platform.recipe import schema

_CLASSES: dict[type, type[Filter]] = {
    schema.LengthFilter: Length,
    schema.ScriptFilter: Script,
    schema.BoilerplateFilter: Boilerplate,
    schema.EncodingFilter: Encoding,
    schema.LanguageIdFilter: LanguageId,
    schema.GopherQualityFilter: GopherQuality,
    schema.GopherRepetitionFilter: GopherRepetition,
    schema.C4Filter: C4,
    schema.FineWebFilter: FineWeb,
    schema.FlaggedWordsFilter: FlaggedWords,
    schema.UrlDomainFilter: UrlDomain,
}


def build_filter(cfg: schema.FilterConfig, lang: str) -> Filter:
    return _CLASSES[type(cfg)](cfg, lang)


__all__ = ["Filter", "build_filter", "identify", "script_ratio", "undo_mojibake"]
