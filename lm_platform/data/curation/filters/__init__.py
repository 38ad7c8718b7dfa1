"""Document filters, one concern per module, built from the recipe's filter entries.

Each filter's recipe settings (a pydantic model whose `name` is the recipe's `name:`) live in
`lm_platform.recipe.filter_settings`, which the recipe's filter union is made from (`FILTER_SETTINGS`);
each filter module imports its own. `FILTERS` below registers settings -> filter, in the same order.
Adding a filter is its settings class there (and in `FILTER_SETTINGS`), one module here and one line below.

`build_filter(cfg, lang)` turns a recipe entry into a filter for one language; each filter's
`check(doc)` returns None to keep the document or a short reason to drop it.
"""

from __future__ import annotations

from lm_platform.data.curation.filters.base import Filter
from lm_platform.data.curation.filters.boilerplate import Boilerplate, BoilerplateFilter
from lm_platform.data.curation.filters.c4 import C4, C4Filter
from lm_platform.data.curation.filters.datatrove_block import Datatrove, DatatroveFilter
from lm_platform.data.curation.filters.encoding import Encoding, EncodingFilter, undo_mojibake
from lm_platform.data.curation.filters.fineweb import FineWeb, FineWebFilter
from lm_platform.data.curation.filters.flagged_words import FlaggedWords, FlaggedWordsFilter
from lm_platform.data.curation.filters.gopher_quality import GopherQuality, GopherQualityFilter
from lm_platform.data.curation.filters.gopher_repetition import GopherRepetition, GopherRepetitionFilter
from lm_platform.data.curation.filters.language_id import LanguageId, LanguageIdFilter, identify
from lm_platform.data.curation.filters.length import Length, LengthFilter
from lm_platform.data.curation.filters.perplexity import PerplexityFilter
from lm_platform.data.curation.filters.prose import Prose, ProseFilter
from lm_platform.data.curation.filters.script import Script, ScriptFilter, script_ratio
from lm_platform.data.curation.filters.url_domain import UrlDomain, UrlDomainFilter

# recipe settings -> filter; None: run by curation itself (perplexity needs the reference model).
FILTERS: dict[type, type[Filter] | None] = {
    LengthFilter: Length,
    ScriptFilter: Script,
    BoilerplateFilter: Boilerplate,
    EncodingFilter: Encoding,
    LanguageIdFilter: LanguageId,
    GopherQualityFilter: GopherQuality,
    GopherRepetitionFilter: GopherRepetition,
    C4Filter: C4,
    FineWebFilter: FineWeb,
    FlaggedWordsFilter: FlaggedWords,
    UrlDomainFilter: UrlDomain,
    ProseFilter: Prose,
    DatatroveFilter: Datatrove,
    PerplexityFilter: None,
}


def build_filter(cfg, lang: str) -> Filter:
    impl = FILTERS[type(cfg)]
    if impl is None:
        raise ValueError(f"the '{cfg.name}' filter is run by curation itself, not built as a chain filter")
    return impl(cfg, lang)


__all__ = ["FILTERS", "Filter", "build_filter", "identify", "script_ratio", "undo_mojibake"]
