"""Every filter's recipe settings, at the bottom of the recipe layer: the filter implementations (in
`lm_platform.data.curation.filters`, one module per filter) import their settings from here, and the recipe's
filter union (`lm_platform.recipe.filters.FilterConfig`) is made from `FILTER_SETTINGS` without importing them.

Also here: what the recipe checks at load without the filters' code: the languages the script filter has a
rule for, the shipped stop-word table and `missing_resources` (a filter that needs a language resource the
language has from nowhere).
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lm_platform.recipe.base import StrictConfig


def load_block(path: str) -> type:
    """The datatrove filter class at `path` (module.Class); a clear error when it is not one."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"block '{path}' is not a class path (module.ClassName)")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"block '{path}' cannot be imported: {exc}") from exc
    from datatrove.pipeline.filters.base_filter import BaseFilter

    if not (inspect.isclass(cls) and issubclass(cls, BaseFilter)):
        raise ValueError(f"block '{path}' is not a datatrove filter (a subclass of BaseFilter)")
    return cls


# Languages the script filter has a rule for.
SCRIPT_LANGS = frozenset({"ja", "vi", "en"})


class LengthFilter(StrictConfig):
    name: Literal["length"] = "length"
    min_chars: int = Field(200, ge=0)
    max_chars: int = Field(1_000_000, gt=0)


class ScriptFilter(StrictConfig):
    """Share of the language's characteristic characters among letters (a cheap language check)."""

    name: Literal["script"] = "script"
    min_ratio: float = Field(0.5, ge=0, le=1)
    letters: str | None = Field(
        None,
        description="The language's letters as a regex character class (e.g. 'a-zA-Z', '\\u0e00-\\u0e7f'): "
        "the share of letters in it; needed for a language without a shipped rule (ja, vi, en)",
    )

    @field_validator("letters")
    @classmethod
    def _letters(cls, letters: str | None) -> str | None:
        if letters is not None:
            try:
                re.compile(f"[{letters}]")
            except re.error as exc:
                raise ValueError(f"letters '{letters}' is not a character class: {exc}") from exc
        return letters


class BoilerplateFilter(StrictConfig):
    """Navigation- and footer-like documents: mostly short lines, or lines with boilerplate markers."""

    name: Literal["boilerplate"] = "boilerplate"
    short_line_chars: int = Field(30, gt=0)
    max_short_line_fraction: float = Field(0.5, ge=0, le=1)
    max_short_line_char_share: float = Field(
        0.3, ge=0, le=1, description="...and only when the short lines hold more than this share of the text"
    )
    markers: tuple[str, ...] = ("©", "cookie", "javascript", "lorem ipsum", "all rights reserved")
    max_marker_line_fraction: float = Field(0.3, ge=0, le=1)
    max_navigation_kinds: int | None = Field(
        1,
        ge=0,
        description="Drop a page with more kinds of navigation lines (menu strip or column, breadcrumb, "
        "bare date, link counter, footer) than this, when they are at least `min_navigation_line_fraction` "
        "of its lines: a site's chrome has several kinds, a list in an article one",
    )
    min_navigation_line_fraction: float = Field(
        0.1, ge=0, le=1, description="...the share of lines that makes navigation the page, not a stray line"
    )
    max_navigation_line_fraction: float | None = Field(
        0.3, ge=0, le=1, description="Drop a page whose non-empty lines are navigation lines above this share"
    )


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
        0.0005, ge=0, le=1, description="Characters in mis-decoded sequences tolerated (drop_mojibake)"
    )
    drop_mojibake: bool = Field(True, description="False: let normalisation repair mojibake (ftfy)")


class LanguageIdFilter(StrictConfig):
    """Language ID from py3langid's bundled model; keeps documents in `languages` (default: the
    source's language) whose probability is at least `min_score` (datatrove's default 0.65)."""

    name: Literal["language_id"] = "language_id"
    min_score: float = Field(0.65, ge=0, le=1)
    languages: tuple[str, ...] = ()
    max_chars: int = Field(5_000, gt=0, description="Classify at most this many leading characters")


class GopherQualityFilter(StrictConfig):
    """Gopher quality rules; datatrove's defaults. Words are syllables for vi, MeCab words for ja."""

    name: Literal["gopher_quality"] = "gopher_quality"
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_lines_for_line_ratios: int = Field(
        5, ge=1, description="Bullet and ellipsis line shares judge documents of at least this many lines"
    )
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] | None = Field(
        None,
        description="Default: the language's stop words (languages.<lang>.stop_words or stop_words_from), "
        "else the list the platform ships for it (en, vi, ja)",
    )


class GopherRepetitionFilter(StrictConfig):
    name: Literal["gopher_repetition"] = "gopher_repetition"
    min_word_diversity: float | None = Field(
        0.55,
        ge=0,
        le=1,
        description="Moving-average type-token ratio over 50-word windows (MATTR): SEO pages recycle a few "
        "templates around a few keywords; prose keeps introducing words. None: off",
    )
    min_lexical_richness: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Herdan's C, log(distinct words) / log(words), over the first `richness_words` words "
        "(numbers as one word): a page that recycles a few templates and keywords with a period longer "
        "than MATTR's windows. None: off",
    )
    richness_words: int = Field(
        400, ge=50, description="Words Herdan's C reads at most (texts of 50 or more)"
    )
    max_keyword_echoes: float | None = Field(
        1.0,
        ge=0,
        description="Keyword echoes per 100 words: a name or phrase said twice with only a list separator "
        "between ('即日融資、即日融資', 'cheap shoes, cheap shoes'), as keyword-stuffed pages write; "
        "needs `min_keyword_echoes` different phrases. None: off",
    )
    min_keyword_echoes: int = Field(
        2, ge=1, description="Different echoed phrases a document needs at least (a refrain echoes one)"
    )
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = (
        (5, 0.15),
        (6, 0.14),
        (7, 0.13),
        (8, 0.12),
        (9, 0.11),
        (10, 0.10),
    )


class C4Filter(StrictConfig):
    """C4 line and document rules; datatrove's defaults. `rewrite` keeps only the lines that pass."""

    name: Literal["c4"] = "c4"
    rewrite: bool = True
    max_removed_fraction: float = Field(
        0.5, ge=0, le=1, description="A rewrite that would remove more of the text drops the document"
    )
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    phrases_end_lines: bool = Field(
        True,
        description="A line of running text without terminal punctuation (verse, a speaker's line, "
        "classical prose ending in '、') is kept and counts as a sentence: it holds function words",
    )
    end_punctuation: tuple[str, ...] = (".", "?", "!", '"', "'")
    min_num_sentences: int | None = 5
    min_words_per_line: int | None = 3
    max_word_length: int | None = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    policy_substrings: tuple[str, ...] = (
        "terms of use",
        "privacy policy",
        "cookie policy",
        "uses cookies",
        "use of cookies",
        "use cookies",
    )


class FineWebFilter(StrictConfig):
    name: Literal["fineweb"] = "fineweb"
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    stop_chars: tuple[str, ...] = (".", "!", "?", "。", "！", "？", "．", "‼", "⁇", "⁈", "⁉", "‽")
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    phrases_end_lines: bool = Field(
        True,
        description="A line of running text without a full stop (verse, a speaker's line, classical prose "
        "ending in '、') counts as ended and is not a short line: it holds the language's function words",
    )
    count_by: Literal["lines", "chars"] = Field(
        "lines",
        description="Punctuation and short-line shares over lines (datatrove) or over characters (headings "
        "and list items in an article then weigh what they hold, not one line each)",
    )


class FlaggedWordsFilter(StrictConfig):
    """Share of words on a list (file path, relative to the recipe; one entry a line)."""

    name: Literal["flagged_words"] = "flagged_words"
    path: str
    max_ratio: float = Field(0.01, ge=0, le=1)


class UrlDomainFilter(StrictConfig):
    name: Literal["url_domain"] = "url_domain"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    require_url: bool = False


class ProseFilter(StrictConfig):
    """Word salad (function-word order) and navigation pages (share of characters in sentences)."""

    name: Literal["prose"] = "prose"
    min_prose_char_share: float | None = Field(0.35, ge=0, le=1)
    min_sentence_words: int = Field(
        5, ge=1, description="Words a sentence line has at least (vi, en); 3x this counts without a full stop"
    )
    min_sentence_chars: int = Field(12, ge=1, description="Characters a sentence line has at least (ja)")
    phrases_are_prose: bool = Field(
        True,
        description="Lines of running text without a full stop (verse, speaker lines, classical prose) "
        "count as prose: they hold the language's function words; menus and link titles are labels",
    )
    max_function_word_disorder: float | None = Field(0.1, ge=0, le=1)
    min_function_heads: int = Field(8, ge=1, description="Judge word order only with this many heads")
    min_disordered_pairs: int = Field(
        2,
        ge=1,
        description="Out-of-order pairs a document needs at least: one is a phrasal verb ('coming in for')",
    )


class DatatroveFilter(StrictConfig):
    """A datatrove filter block by class path, with its constructor arguments."""

    name: Literal["datatrove"] = "datatrove"
    block: str = Field(description="Class path, e.g. datatrove.pipeline.filters.GopherQualityFilter")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the block")

    @field_validator("block")
    @classmethod
    def _importable(cls, block: str) -> str:
        load_block(block)
        return block

    @model_validator(mode="after")
    def _args_fit(self) -> DatatroveFilter:
        cls = load_block(self.block)
        try:
            inspect.signature(cls.__init__).bind(None, **self.args)
        except TypeError as exc:
            raise ValueError(f"args do not fit {self.block}: {exc}") from exc
        return self


class PerplexityFilter(StrictConfig):
    """KenLM perplexity with a threshold per source. Every document that reaches this filter gets a
    `perplexity` score and is kept when the score is at most `max_ratio` times what clean text of the
    source's domain scores: the higher of the reference model's perplexity on its own held-out clean text
    and (`calibrate: source`, the default) the median score of the source's own documents that pass the
    other filters, capped at `max_source_shift` times the reference's (or at most `max_perplexity`, an
    absolute value, which a user-supplied `model` needs: its held-out perplexity is unknown). A seeded random share `keep_rest`
    of the documents above the threshold is kept too (0 in the bundled recipes). The model is the
    language's `reference_lm` (trained by the platform) unless `model` names a user-supplied
    `.arpa`/`.bin` file; `sp_model` is the SentencePiece model its text was pre-tokenised with (none:
    whitespace words, or MeCab words for Japanese)."""

    name: Literal["perplexity"] = "perplexity"
    model: str | None = None
    sp_model: str | None = None
    max_ratio: float = Field(
        2.5, gt=0, description="Keep documents up to this multiple of the reference's held-out perplexity"
    )
    max_perplexity: float | None = Field(
        None, gt=0, description="Absolute threshold instead of max_ratio (required with a user 'model')"
    )
    calibrate: Literal["source", "reference"] = Field(
        "source",
        description="'source': the threshold is max_ratio x the higher of the reference's held-out perplexity "
        "and the median score of the source's own documents that pass the other filters (a clean source of "
        "another domain scores higher under the reference, all of it); 'reference': max_ratio x the "
        "reference's held-out perplexity only",
    )
    calibration_docs: int = Field(
        2000, gt=0, description="Documents of the source (a fixed sample by id) whose median calibrates it"
    )
    max_source_shift: float = Field(
        4.0,
        ge=1,
        description="A source's median raises the threshold by at most this factor over the reference's: a "
        "source that scores higher still is another language or mostly noise, not another clean domain",
    )
    min_tokens: int = Field(
        0,
        ge=0,
        description="Documents with fewer of the model's tokens are not judged by perplexity (a mean over a "
        "few tokens swings with one rare name); the other filters judge them. 0: every document",
    )
    keep_rest: float = Field(
        0.0, ge=0, le=1, description="Random share kept of the documents above the threshold"
    )
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "band" in data:
            raise ValueError(
                "'band' was removed: a quantile band of each shard threw away clean text by construction. "
                "Perplexity thresholds are absolute now: use 'max_ratio' (a multiple of the reference "
                "model's held-out perplexity, e.g. 2.5) or 'max_perplexity' (docs/filters.md)"
            )
        return data

    @model_validator(mode="after")
    def _sp_needs_model(self) -> PerplexityFilter:
        if self.sp_model and not self.model:
            raise ValueError("'sp_model' goes with a user-supplied 'model'; the reference LM brings its own")
        if self.model and self.max_perplexity is None:
            raise ValueError(
                "a user-supplied 'model' needs 'max_perplexity' (its held-out perplexity is unknown, so "
                "'max_ratio' has nothing to multiply)"
            )
        return self


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


def missing_resources(lang: str, cfg, sources=()) -> list[str]:
    """Errors, one per filter that needs a resource `lang` has from nowhere, each naming the field to set
    (`cfg`: the language's recipe settings)."""
    where = f"languages.{lang}"
    errors = []
    has_words = bool(cfg.stop_words) or cfg.stop_words_from is not None or lang in STOP_WORDS
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


# The recipe's filter union, in this order (`name` tells them apart); the curation registry
# (lm_platform.data.curation.filters.FILTERS) maps each to its filter.
FILTER_SETTINGS = (
    LengthFilter,
    ScriptFilter,
    BoilerplateFilter,
    EncodingFilter,
    LanguageIdFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    C4Filter,
    FineWebFilter,
    FlaggedWordsFilter,
    UrlDomainFilter,
    ProseFilter,
    DatatroveFilter,
    PerplexityFilter,
)
