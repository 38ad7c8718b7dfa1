"""The recipe: everything one language-model project needs, validated at load time.

A recipe names its text sources (with licenses), how each language is normalised and filtered, how the
tokenizer is made, the model, the training stages and the evaluations. Everything downstream is a pure
function of the recipe and its inputs, so a recipe error must surface here, before any work starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lm_platform.recipe.base import NAME_PATTERN, SPDX_PATTERN, _Strict
from lm_platform.recipe.finetune import ExportConfig, FinetuneConfig, MergeConfig, check_finetune
from lm_platform.recipe.sources import SourceConfig
from lm_platform.recipe.training import (
    BlendConfig,
    GenerationConfig,
    ModelConfig,
    PackConfig,
    StageConfig,
)
from lm_platform.training.config import TrainConfig

# Languages the `script` filter has a rule for (lm_platform.data.filters.script_ratio).
SCRIPT_LANGS = frozenset({"ja", "vi", "en"})


class LengthFilter(_Strict):
    name: Literal["length"] = "length"
    min_chars: int = Field(200, ge=0)
    max_chars: int = Field(1_000_000, gt=0)


class ScriptFilter(_Strict):
    """Share of the language's characteristic characters among letters (a cheap language check)."""

    name: Literal["script"] = "script"
    min_ratio: float = Field(0.5, ge=0, le=1)


class BoilerplateFilter(_Strict):
    """Navigation- and footer-like documents: mostly short lines, or lines with boilerplate markers."""

    name: Literal["boilerplate"] = "boilerplate"
    short_line_chars: int = Field(30, gt=0)
    max_short_line_fraction: float = Field(0.5, ge=0, le=1)
    markers: tuple[str, ...] = ("©", "cookie", "javascript", "lorem ipsum", "all rights reserved")
    max_marker_line_fraction: float = Field(0.3, ge=0, le=1)


class EncodingFilter(_Strict):
    """Broken encoding: replacement characters, C1 controls, or UTF-8 read as cp1252 (mojibake)."""

    name: Literal["encoding"] = "encoding"
    max_bad_char_fraction: float = Field(0.0, ge=0, le=1)
    drop_mojibake: bool = Field(True, description="False: let normalisation repair mojibake (ftfy)")


class LanguageIdFilter(_Strict):
    """Language ID from py3langid's bundled model; keeps documents in `languages` (default: the
    source's language) whose probability is at least `min_score` (datatrove's default 0.65)."""

    name: Literal["language_id"] = "language_id"
    min_score: float = Field(0.65, ge=0, le=1)
    languages: tuple[str, ...] = ()
    max_chars: int = Field(20_000, gt=0, description="Classify at most this many leading characters")


class GopherQualityFilter(_Strict):
    """Gopher quality rules; datatrove's defaults. Words are syllables for vi, MeCab words for ja."""

    name: Literal["gopher_quality"] = "gopher_quality"
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] | None = Field(None, description="Default: a short list per language")


class GopherRepetitionFilter(_Strict):
    name: Literal["gopher_repetition"] = "gopher_repetition"
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


class C4Filter(_Strict):
    """C4 line and document rules; datatrove's defaults. `rewrite` keeps only the lines that pass."""

    name: Literal["c4"] = "c4"
    rewrite: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
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


class FineWebFilter(_Strict):
    name: Literal["fineweb"] = "fineweb"
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    stop_chars: tuple[str, ...] = (".", "!", "?", "。", "！", "？", "．", "‼", "⁇", "⁈", "⁉", "‽")
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


class FlaggedWordsFilter(_Strict):
    """Share of words on a list (file path, relative to the recipe; one entry a line)."""

    name: Literal["flagged_words"] = "flagged_words"
    path: str
    max_ratio: float = Field(0.01, ge=0, le=1)


class UrlDomainFilter(_Strict):
    name: Literal["url_domain"] = "url_domain"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    require_url: bool = False


class PerplexityFilter(_Strict):
    """KenLM perplexity band (CCNet-style). Every document that reaches this filter gets a `perplexity`
    score; those inside the quantile `band` of the shard's scores are kept, plus a seeded random share
    `keep_rest` of the others. The model is the language's `reference_lm` (trained by the platform) unless
    `model` names a user-supplied `.arpa`/`.bin` file; `sp_model` is the SentencePiece model its text was
    pre-tokenised with (none: whitespace words, or characters for unspaced scripts)."""

    name: Literal["perplexity"] = "perplexity"
    model: str | None = None
    sp_model: str | None = None
    band: tuple[float, float] = Field((0.0, 0.9), description="Quantile band of perplexity kept (low, high)")
    keep_rest: float = Field(
        0.0, ge=0, le=1, description="Random share kept of the documents outside the band"
    )
    seed: int = 0

    @field_validator("band")
    @classmethod
    def _band(cls, band: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= band[0] < band[1] <= 1:
            raise ValueError(f"band {list(band)} is not a quantile band inside [0, 1] (low < high)")
        return band

    @model_validator(mode="after")
    def _sp_needs_model(self) -> PerplexityFilter:
        if self.sp_model and not self.model:
            raise ValueError("'sp_model' goes with a user-supplied 'model'; the reference LM brings its own")
        return self


FilterConfig = Annotated[
    LengthFilter
    | ScriptFilter
    | BoilerplateFilter
    | EncodingFilter
    | LanguageIdFilter
    | GopherQualityFilter
    | GopherRepetitionFilter
    | C4Filter
    | FineWebFilter
    | FlaggedWordsFilter
    | UrlDomainFilter
    | PerplexityFilter,
    Field(discriminator="name"),
]


class PiiConfig(_Strict):
    """PII redaction after filtering: each kind found is replaced by its placeholder and counted."""

    emails: bool = True
    ip_addresses: bool = True
    phones: tuple[Literal["vi", "ja", "intl"], ...] = ("vi", "ja", "intl")
    email_placeholder: str = "<EMAIL>"
    ip_placeholder: str = "<IP>"
    phone_placeholder: str = "<PHONE>"


class ReferenceLMConfig(_Strict):
    """A KenLM model trained on a high-quality source of the language (CCNet-style): the source's text goes
    through the language's other filters, is pre-tokenised by a SentencePiece model trained on it, and
    `lmplz` estimates an n-gram model that `build_binary` turns into a binary file."""

    source: str = Field(description="The high-quality source the model learns from")
    order: int = Field(5, ge=2, le=6, description="n-gram order (KenLM is built for at most 6)")
    sp_vocab_size: int = Field(8000, ge=64, description="SentencePiece pieces used to pre-tokenise")
    prune: tuple[int, ...] = Field(
        (0, 1, 1), description="lmplz --prune: drop n-grams seen at most this often, per order from unigrams"
    )
    max_docs: int | None = Field(None, gt=0, description="Learn from at most this many documents")
    heldout_fraction: float = Field(0.05, ge=0, lt=1, description="Documents kept out to measure perplexity")
    memory: str = Field("1G", description="lmplz -S: memory for sorting (e.g. '1G', '20%')")

    @field_validator("prune")
    @classmethod
    def _prune(cls, prune: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < a for a, b in zip(prune, prune[1:], strict=False)) or any(p < 0 for p in prune):
            raise ValueError(f"prune {list(prune)}: thresholds are >= 0 and never decrease with the order")
        if prune and prune[0] != 0:
            raise ValueError("prune: lmplz cannot prune unigrams; the first threshold must be 0")
        return prune


class LanguageConfig(_Strict):
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFC"
    chars_per_token: float = Field(4.0, gt=0, description="Token estimate until a tokenizer exists")
    filters: tuple[FilterConfig, ...] = ()
    fix_mojibake: bool = Field(True, description="Repair mojibake with ftfy during normalisation")
    pii: PiiConfig | None = Field(None, description="Redact PII in kept documents; None: leave text as is")
    expected_keep_rate: tuple[float, float] = Field(
        (0.0, 1.0), description="Keep-rate band; the curated asset check warns outside it"
    )
    reference_lm: ReferenceLMConfig | None = Field(
        None, description="KenLM model for the 'perplexity' filter (asset reference_lm/<lang>)"
    )

    @property
    def perplexity(self) -> PerplexityFilter | None:
        found = [f for f in self.filters if isinstance(f, PerplexityFilter)]
        return found[0] if found else None

    @property
    def uses_reference_lm(self) -> bool:
        return self.perplexity is not None and self.perplexity.model is None

    @field_validator("expected_keep_rate")
    @classmethod
    def _band(cls, band: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= band[0] <= band[1] <= 1:
            raise ValueError(f"expected_keep_rate {list(band)} is not a band inside [0, 1]")
        return band


class TokenizerSample(_Strict):
    """The seeded, size-capped sample of text the tokenizer learns from (`tokenization.sample`)."""

    max_chars: int | None = Field(
        50_000_000, gt=0, description="At most this many characters in all (None: every document)"
    )
    max_docs: int | None = Field(None, gt=0, description="At most this many documents in all")
    seed: int = 0
    mixture: dict[str, float] | None = Field(
        None, description="Share of the sample per source name (default: one uniform sample of all sources)"
    )


class TokenizerConfig(_Strict):
    mode: Literal["train", "extend"] = "train"
    base: str | None = Field(
        None,
        description="Base HF tokenizer when mode is 'extend': a hub id, or a directory (relative to the recipe "
        "when it starts with ./ or ../ or exists beside it)",
    )
    model_type: Literal["bpe", "unigram"] = "bpe"
    vocab_size: int = Field(32000, ge=64)
    character_coverage: float = Field(0.9995, gt=0, le=1)
    byte_fallback: bool = True
    user_defined_symbols: tuple[str, ...] = ()
    train_stage: str | None = Field(None, description="Blend to train on; default the first stage")
    max_sentences: int = Field(2_000_000, gt=0)
    seed: int = 0
    language: str | None = Field(
        None,
        description="Target language: what 'extend' learns new tokens from, and where the fertility check "
        "compares the new tokenizer with 'base' (default: every held-out language)",
    )
    extend_multiple: int = Field(
        128,
        gt=0,
        description="'extend': the number of new tokens (vocab_size - base) must be a multiple of this",
    )
    extend_min_frequency: int = Field(5, gt=0, description="'extend' keeps tokens formed this often")
    sample: TokenizerSample = Field(
        default_factory=TokenizerSample, description="The training text: a seeded sample under a size cap"
    )

    @model_validator(mode="after")
    def _base_for_extend(self) -> TokenizerConfig:
        if self.mode == "extend" and not self.base:
            raise ValueError("mode 'extend' needs 'base' (the tokenizer to extend)")
        if self.mode == "extend" and not self.language:
            raise ValueError("mode 'extend' needs 'language' (the language whose tokens are added)")
        return self


class ExactDedupConfig(_Strict):
    """Exact dedup on a hash of the normalised text, kept in a persistent index across runs.

    `partitions` splits the index by hash prefix into that many SQLite files (buckets) that `workers`
    processes update in parallel; `index: memory` keeps nothing between runs (tests, one-off jobs)."""

    index: Literal["sqlite", "memory"] = "sqlite"
    partitions: int = Field(16, ge=1, le=256)
    workers: int = Field(1, ge=1)
    batch_docs: int = Field(50_000, gt=0, description="Documents hashed per indexing transaction")


class NearDupConfig(_Strict):
    """MinHash LSH near-duplicate removal across sources; one document kept per cluster by priority.

    Shingles are word n-grams, or character n-grams for languages written without spaces
    (`char_languages`). A pair is a candidate when all `rows` hashes of one of the `bands` agree; with
    `verify`, a candidate pair is kept only when the full signatures estimate a Jaccard similarity of at
    least `threshold` (fewer false positives than banding alone)."""

    enabled: bool = True
    word_ngram: int = Field(5, gt=0)
    char_ngram: int = Field(5, gt=0)
    char_languages: tuple[str, ...] = ("ja", "zh", "th")
    bands: int = Field(14, gt=0)
    rows: int = Field(8, gt=0)
    threshold: float = Field(0.8, gt=0, le=1)
    verify: bool = True
    seed: int = 1
    workers: int = Field(1, ge=1)

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


class DedupConfig(_Strict):
    exact: ExactDedupConfig = ExactDedupConfig()
    near: NearDupConfig | None = Field(None, description="MinHash near-dup removal; absent means off")


class DecontaminationConfig(_Strict):
    """Drop training documents that share an n-gram with an evaluation set of the recipe.

    Word n-grams (`ngram`, 13 by default) on lowercased text without punctuation; character n-grams
    (`char_ngram`) for `char_languages`. `evaluations` limits the sets used (default: all). An evaluation
    text shorter than one n-gram is matched whole (a document leaks it when it contains the whole
    normalised text) if it has at least `min_words` words (`min_chars` characters for `char_languages`);
    shorter ones are skipped, so that common phrases do not remove documents."""

    enabled: bool = True
    ngram: int = Field(13, gt=0)
    char_ngram: int = Field(25, gt=0)
    min_words: int = Field(8, gt=0, description="Shortest evaluation text (words) matched whole")
    min_chars: int = Field(15, gt=0, description="Shortest evaluation text (characters) matched whole")
    char_languages: tuple[str, ...] = ("ja", "zh", "th")
    evaluations: tuple[str, ...] | None = None


class EvalConfig(_Strict):
    """A held-out evaluation set: a local JSONL file (`format: jsonl`), or a dataset read through the same
    `datasets` code path as `hf` sources (`format: hf`: a hub id, or a local directory of Parquet/JSON
    files). Each record gives a text (`text_field`) and its language (`lang_field`, else `language`)."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["perplexity"] = "perplexity"
    location: str = Field(
        description="JSONL file of held-out documents, or (format hf) a hub id or directory"
    )
    format: Literal["jsonl", "hf"] = "jsonl"
    text_field: str = "text"
    lang_field: str = "lang"
    language: str | None = Field(None, description="Language of records that have no `lang_field`")
    hf_config: str | None = None
    hf_split: str = "test"
    stage: str | None = Field(None, description="Checkpoint to score; default the last stage")
    max_docs: int | None = Field(None, gt=0)


class Recipe(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seed: int = 0
    languages: dict[str, LanguageConfig]
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    license_allowlist: tuple[str, ...] = Field(min_length=1)
    tokenizer: TokenizerConfig
    model: ModelConfig
    stages: tuple[StageConfig, ...] = Field(min_length=1)
    evaluations: tuple[EvalConfig, ...] = ()
    dedup: DedupConfig = DedupConfig()
    decontamination: DecontaminationConfig | None = None
    generation: GenerationConfig = GenerationConfig()
    finetune: FinetuneConfig | None = None
    merges: tuple[MergeConfig, ...] = ()
    exports: tuple[ExportConfig, ...] = ()

    @model_validator(mode="after")
    def _cross_references(self) -> Recipe:
        names = [s.name for s in self.sources]
        _unique("sources", names)
        _unique("stages", [s.name for s in self.stages])
        _unique("evaluations", [e.name for e in self.evaluations])
        for i, src in enumerate(self.sources):
            if src.language not in self.languages:
                raise ValueError(
                    f"sources.{i}.language: '{src.language}' has no entry in 'languages' "
                    f"(known: {sorted(self.languages)})"
                )
        for lang, cfg in self.languages.items():
            if any(f.name == "script" for f in cfg.filters) and lang not in SCRIPT_LANGS:
                raise ValueError(
                    f"languages.{lang}.filters: the script filter has no rule for '{lang}' "
                    f"(have: {sorted(SCRIPT_LANGS)})"
                )
        for i, lic in enumerate(self.license_allowlist):
            if not re.match(SPDX_PATTERN, lic):
                raise ValueError(f"license_allowlist.{i}: '{lic}' is not an SPDX identifier")
        seen: list[str] = []
        for i, stage in enumerate(self.stages):
            _check_stage_mixture(i, stage, names)
            for src in stage.blend.mixture:
                if src not in names and src not in stage.blend.groups:
                    raise ValueError(f"stages.{i}.blend.mixture: unknown source '{src}' (known: {names})")
            if stage.init_from != "model" and stage.init_from not in seen:
                raise ValueError(
                    f"stages.{i}.init_from: '{stage.init_from}' is neither 'model' nor an earlier stage "
                    f"(earlier: {seen})"
                )
            seen.append(stage.name)
        for lang, cfg in self.languages.items():
            _check_language_lm(lang, cfg, self.sources)
        stage_names = [s.name for s in self.stages]
        if self.tokenizer.language is not None and self.tokenizer.language not in self.languages:
            raise ValueError(f"tokenizer.language: '{self.tokenizer.language}' has no entry in 'languages'")
        if self.tokenizer.train_stage is not None and self.tokenizer.train_stage not in stage_names:
            raise ValueError(f"tokenizer.train_stage: unknown stage '{self.tokenizer.train_stage}'")
        for i, ev in enumerate(self.evaluations):
            if ev.stage is not None and ev.stage not in stage_names:
                raise ValueError(f"evaluations.{i}.stage: unknown stage '{ev.stage}'")
        if self.decontamination is not None and self.decontamination.evaluations is not None:
            evals = [e.name for e in self.evaluations]
            for j, name in enumerate(self.decontamination.evaluations):
                if name not in evals:
                    raise ValueError(
                        f"decontamination.evaluations.{j}: unknown evaluation '{name}' (known: {evals})"
                    )
        check_finetune(
            self.finetune,
            self.merges,
            self.exports,
            stage_names,
            list(self.languages),
            self.license_allowlist,
        )
        return self

    # Convenience lookups used by the shell and the core alike.
    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)

    def stage(self, name: str) -> StageConfig:
        return next(s for s in self.stages if s.name == name)

    def higher_priority(self, name: str) -> list[SourceConfig]:
        """Sources whose copy of a shared document wins over `name`'s in dedup: a higher priority, or
        the same priority and listed earlier."""
        order = [s.name for s in self.sources]
        me = self.source(name)
        return [
            o
            for o in self.sources
            if o.priority > me.priority
            or (o.priority == me.priority and order.index(o.name) < order.index(name))
        ]

    @property
    def tokenizer_stage(self) -> StageConfig:
        return self.stage(self.tokenizer.train_stage or self.stages[0].name)

    def eval_stage(self, ev: EvalConfig) -> StageConfig:
        return self.stage(ev.stage or self.stages[-1].name)


def _check_stage_mixture(i: int, stage: StageConfig, sources: list[str]) -> None:
    """Groups name known sources, each source appears once in the mixture, epoch caps are sane."""
    where = f"stages.{i}.blend"
    blend = stage.blend
    for group, members in blend.groups.items():
        if group in sources:
            raise ValueError(f"{where}.groups.{group}: a group cannot have the name of a source")
        if not members:
            raise ValueError(f"{where}.groups.{group}: a group needs at least one source")
        for src in members:
            if src not in sources:
                raise ValueError(f"{where}.groups.{group}: unknown source '{src}' (known: {sources})")
        if group not in blend.mixture:
            raise ValueError(f"{where}.groups.{group}: the group is not used in the mixture")
    used = blend.mixture_sources()
    twice = sorted({s for s in used if used.count(s) > 1})
    if twice:
        raise ValueError(f"{where}.mixture: sources listed more than once (directly or in groups): {twice}")
    for src, cap in blend.source_max_epochs.items():
        if src not in used:
            raise ValueError(f"{where}.source_max_epochs: '{src}' is not in the stage's mixture")
        if cap < 1:
            raise ValueError(f"{where}.source_max_epochs.{src}: an epoch cap is at least 1, got {cap}")
        if not blend.upsample:
            raise ValueError(f"{where}.source_max_epochs: epoch caps need 'upsample: true'")


def _check_language_lm(lang: str, cfg: LanguageConfig, sources: list[SourceConfig]) -> None:
    where = f"languages.{lang}"
    ppl = [j for j, f in enumerate(cfg.filters) if isinstance(f, PerplexityFilter)]
    if len(ppl) > 1:
        raise ValueError(f"{where}.filters.{ppl[1]}: one 'perplexity' filter per language")
    if ppl and ppl[0] != len(cfg.filters) - 1:
        raise ValueError(
            f"{where}.filters.{ppl[0]}: 'perplexity' must be the last filter (its band is taken over the "
            "documents that pass the others)"
        )
    if cfg.uses_reference_lm and cfg.reference_lm is None:
        raise ValueError(
            f"{where}.filters.{ppl[0]}: the 'perplexity' filter needs a 'model' file or "
            f"{where}.reference_lm (a KenLM model the platform trains)"
        )
    if cfg.reference_lm is not None:
        names = {s.name: s for s in sources}
        src = names.get(cfg.reference_lm.source)
        if src is None:
            raise ValueError(
                f"{where}.reference_lm.source: unknown source '{cfg.reference_lm.source}' (known: {list(names)})"
            )
        if src.language != lang:
            raise ValueError(
                f"{where}.reference_lm.source: '{src.name}' is in language '{src.language}', not '{lang}'"
            )


def _unique(what: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what}: duplicate names {dupes}")


__all__ = [
    "NAME_PATTERN",
    "SPDX_PATTERN",
    "BlendConfig",
    "GenerationConfig",
    "ModelConfig",
    "PackConfig",
    "Recipe",
    "SourceConfig",
    "StageConfig",
    "TrainConfig",
]
