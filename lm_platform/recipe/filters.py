"""Recipe settings for curation, per language: the filter chain, PII redaction and the reference model.

Each filter's settings live in `lm_platform.recipe.filter_settings` (beneath this module; the filters in
`lm_platform.data.curation.filters` import theirs from there); `FilterConfig` is the union of
`FILTER_SETTINGS`, told apart by `name`. `lm_platform.recipe.schema` re-exports everything here, so older imports keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, field_validator

from lm_platform.recipe.base import StrictConfig
from lm_platform.recipe.filter_settings import (
    FILTER_SETTINGS,
    SCRIPT_LANGS,
    BoilerplateFilter,
    C4Filter,
    DatatroveFilter,
    EncodingFilter,
    FineWebFilter,
    FlaggedWordsFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageIdFilter,
    LengthFilter,
    PerplexityFilter,
    ProseFilter,
    ScriptFilter,
    UrlDomainFilter,
    missing_resources,
)
from lm_platform.recipe.quality import QualityModelConfig

if TYPE_CHECKING:
    from lm_platform.recipe.sources import SourceConfig

FilterConfig = Annotated[Union[FILTER_SETTINGS], Field(discriminator="name")]  # noqa: UP007


class PiiConfig(StrictConfig):
    """PII redaction after filtering: each kind found is replaced by its placeholder and counted."""

    emails: bool = True
    ip_addresses: bool = True
    phones: tuple[Literal["vi", "ja", "intl"], ...] = ("vi", "ja", "intl")
    email_placeholder: str = "<EMAIL>"
    ip_placeholder: str = "<IP>"
    phone_placeholder: str = "<PHONE>"


class ReferenceLMConfig(StrictConfig):
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


class LanguageConfig(StrictConfig):
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFC"
    chars_per_token: float = Field(4.0, gt=0, description="Token estimate until a tokenizer exists")
    filters: tuple[FilterConfig, ...] = ()
    fix_mojibake: bool = Field(True, description="Repair mojibake with ftfy during normalisation")
    pii: PiiConfig | None = Field(None, description="Redact PII in kept documents; None: leave text as is")
    expected_keep_rate: tuple[float, float] = Field(
        (0.2, 1.0),
        description="Keep-rate band; the curated asset check warns outside it. The default flags a collapse: "
        "a chain that keeps under a fifth of a source is misjudging it (settings for another language, a "
        "threshold from another domain) far more often than the source is that bad",
    )
    stop_words: tuple[str, ...] | None = Field(
        None,
        description="The language's function words, for the filters that count stop words or tell phrases "
        "from labels; default: the platform's table (en, vi, ja) or stop_words_from",
    )
    stop_words_from: str | None = Field(
        None,
        description="A clean source of the language whose most common words become its stop words "
        "(FineWeb-2's way), for a language the platform ships none for",
    )
    reference_lm: ReferenceLMConfig | None = Field(
        None, description="KenLM model for the 'perplexity' filter (asset reference_lm/<lang>)"
    )
    quality: QualityModelConfig | None = Field(
        None, description="The language's quality model (asset quality_model/<lang>; recipe/quality.py)"
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


def check_language_lm(lang: str, cfg: LanguageConfig, sources: list[SourceConfig]) -> None:
    """The language's perplexity settings and (`missing_resources`) the resources its filters need."""
    where = f"languages.{lang}"
    errors = missing_resources(lang, cfg, sources)
    if errors:
        raise ValueError("; ".join(errors))
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


__all__ = [
    "SCRIPT_LANGS",
    "BoilerplateFilter",
    "C4Filter",
    "DatatroveFilter",
    "EncodingFilter",
    "FilterConfig",
    "FineWebFilter",
    "FlaggedWordsFilter",
    "GopherQualityFilter",
    "GopherRepetitionFilter",
    "LanguageConfig",
    "LanguageIdFilter",
    "LengthFilter",
    "PerplexityFilter",
    "PiiConfig",
    "ProseFilter",
    "ReferenceLMConfig",
    "ScriptFilter",
    "UrlDomainFilter",
    "check_language_lm",
]
