"""Language resources the filters need: stop (function) words, word splitting and script letters.

Where they come from, in this order: the filter's own setting (`gopher_quality.stop_words`,
`script.letters`), the language's setting in the recipe (`languages.<lang>.stop_words`), words derived
from the language's high-quality source (`languages.<lang>.stop_words_from`: FineWeb-2's way, the words
that most documents of clean text use), or the table the platform ships (`STOP_WORDS`,
`lines.FUNCTION_WORDS`, the script rules of `script.py`). A filter that needs a resource the language
has from none of these fails at recipe load naming the field to set (`missing_resources`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from lm_platform.data.curation.filters.lines import FUNCTION_WORDS

# Shipped stop words for Gopher's stop-word rule (Gopher's English list; frequent Vietnamese and
# Japanese function words).
STOP_WORDS = {
    "en": ("the", "be", "to", "of", "and", "that", "have", "with"),
    "vi": ("và", "của", "là", "có", "được", "trong", "các", "cho", "những", "với", "một", "không"),
    "ja": ("の", "に", "は", "を", "た", "が", "で", "て", "と", "し"),
}
# Languages written without spaces between words; the platform splits Japanese with MeCab and no other.
UNSPACED = frozenset({"th", "zh", "lo", "km", "my", "bo", "yue", "wuu"})
# Filters that count words.
WORD_FILTERS = frozenset({"gopher_quality", "gopher_repetition", "c4", "fineweb", "prose", "flagged_words"})

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


def missing_resources(lang: str, cfg, sources=()) -> list[str]:
    """Errors, one per filter that needs a resource `lang` has from nowhere, each naming the field to set
    (`cfg`: the language's recipe settings)."""
    from lm_platform.data.curation.filters.script import SCRIPT_LANGS

    where = f"languages.{lang}"
    errors = []
    has_words = bool(cfg.stop_words) or cfg.stop_words_from is not None or has_shipped_stop_words(lang)
    for i, f in enumerate(cfg.filters):
        if f.name in WORD_FILTERS and lang in UNSPACED:
            errors.append(
                f"{where}.filters.{i}: '{f.name}' counts words, and '{lang}' is written without spaces "
                "between words; the platform splits words at spaces (Japanese with MeCab) and has no word "
                f"splitter for '{lang}': remove the filter or curate '{lang}' with filters that do not "
                "count words (encoding, length, script, language_id, perplexity)"
            )
        elif (
            f.name == "gopher_quality" and f.min_stop_words is not None and not f.stop_words and not has_words
        ):
            errors.append(
                f"{where}.filters.{i}: 'gopher_quality' counts stop words and the platform ships none for "
                f"'{lang}': set {where}.stop_words (the language's most frequent function words), "
                f"{where}.stop_words_from (a clean source of '{lang}' to derive them from), "
                f"{where}.filters.{i}.stop_words, or {where}.filters.{i}.min_stop_words: null"
            )
        elif f.name == "script" and lang not in SCRIPT_LANGS and not f.letters:
            errors.append(
                f"{where}.filters.{i}: 'script' has no rule for '{lang}' (rules: {sorted(SCRIPT_LANGS)}): set "
                f"{where}.filters.{i}.letters to the language's letters as a character class (e.g. 'a-zA-Z' "
                "for a language written in basic Latin letters, '\\u0e00-\\u0e7f' for Thai), or remove it"
            )
    if cfg.stop_words_from is not None:
        names = {s.name: s for s in sources}
        src = names.get(cfg.stop_words_from)
        if src is None:
            errors.append(
                f"{where}.stop_words_from: unknown source '{cfg.stop_words_from}' (known: {list(names)})"
            )
        elif src.language != lang:
            errors.append(
                f"{where}.stop_words_from: '{src.name}' is in language '{src.language}', not '{lang}'"
            )
    return errors
