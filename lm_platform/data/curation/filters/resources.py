"""Language resources the filters need: stop (function) words, word splitting and script letters.

Where they come from, in this order: the filter's own setting (`gopher_quality.stop_words`,
`script.letters`), the language's setting in the recipe (`languages.<lang>.stop_words`), words derived
from the language's high-quality source (`languages.<lang>.stop_words_from`: FineWeb-2's way, the words
that most documents of clean text use), or the table the platform ships (`STOP_WORDS`,
`lines.FUNCTION_WORDS`, the script rules of `script.py`). A filter that needs a resource the language
has from none of these fails at recipe load naming the field to set
(`lm_platform.recipe.filter_settings.missing_resources`, with the shipped `STOP_WORDS` table).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from lm_platform.data.curation.filters.lines import FUNCTION_WORDS
from lm_platform.recipe.filter_settings import STOP_WORDS

# Stop words of a language set for this process by curation (the recipe's, or derived from the
# language's high-quality source); filters built afterwards read them.
_LANGUAGE: dict[str, frozenset[str]] = {}
DERIVED_WORDS = 24  # how many derived stop words a language gets
_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")


def use_stop_words(lang: str, words: Iterable[str] | None) -> None:
    """Set (or, with None, clear) the language's stop words for filters built from now on."""
    if words:
        _LANGUAGE[lang] = frozenset(w.lower() for w in words)
    else:
        _LANGUAGE.pop(lang, None)


def stop_words(lang: str) -> frozenset[str]:
    """The language's stop words: set by curation (recipe or derived), else the shipped table."""
    if lang in _LANGUAGE:
        return _LANGUAGE[lang]
    return frozenset(STOP_WORDS.get(lang, ()))


def function_words(lang: str) -> frozenset[str]:
    """Words that make a line a phrase of running text (lines.is_phrase)."""
    return FUNCTION_WORDS.get(lang) or _LANGUAGE.get(lang, frozenset())


def has_shipped_stop_words(lang: str) -> bool:
    return lang in STOP_WORDS


def derive_stop_words(texts: Iterable[str], n: int = DERIVED_WORDS, max_docs: int = 2000) -> tuple[str, ...]:
    """The `n` words that the most documents use (document frequency, case folded, letters only), over
    at most `max_docs` documents of clean text: in any language those are its function words (articles,
    particles, prepositions, pronouns, the copula), which is what the stop-word rule and the phrase test
    need. Words of one letter are left out; ties go in alphabetical order (the same words every run)."""
    df: Counter[str] = Counter()
    docs = 0
    for text in texts:
        docs += 1
        df.update({w.lower() for w in _WORD.findall(text)})
        if docs >= max_docs:
            break
    if not docs:
        raise ValueError("no documents to derive stop words from")
    ranked = [
        w for w, _c in sorted(df.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1
    ]  # ties: by word
    return tuple(ranked[:n])
