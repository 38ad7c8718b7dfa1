"""Recipe settings for the quality model (DCLM-style: a linear classifier over hashed word and character
n-grams, trained per language on the recipe's high-quality sources against a seeded sample of its web
sources), how a source uses its scores (filter), and how a stage's blend weights by them.

Three places in a recipe:
- `languages.<lang>.quality` (`QualityModelConfig`): the model, an asset `quality_model/<lang>`.
- `sources[].quality` (`SourceQuality`): the source's curated documents get a `quality` score; optionally
  only its top share is kept (`keep_top_share`) or those scoring at least `min_score`.
- `stages[].blend.quality_weighting` (source -> buckets): the top buckets of a source are upsampled within
  the source's share of the stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from lm_platform.recipe.base import Strict

if TYPE_CHECKING:
    from lm_platform.recipe.schema import Recipe


class QualityModelConfig(Strict):
    """A language's quality model: positives are the documents of `positives` (high-quality sources),
    negatives a seeded sample of `negatives` (web sources), both after the language's filters (not the
    perplexity filter); a hash of each id holds out `heldout_fraction` to measure it on."""

    positives: tuple[str, ...] = Field(min_length=1, description="High-quality sources (the positive class)")
    negatives: tuple[str, ...] = Field(min_length=1, description="Web sources sampled for the negative class")
    max_docs_per_class: int = Field(20_000, gt=0, description="Seeded sample size cap per class")
    heldout_fraction: float = Field(0.2, gt=0, lt=1, description="Documents kept out to measure the model")
    word_ngrams: int = Field(2, ge=0, le=3, description="Word n-grams up to this length (0: none)")
    char_ngrams: tuple[int, int] = Field((2, 4), description="Character n-gram lengths (within word bounds)")
    hash_bits: int = Field(18, ge=10, le=24, description="2**hash_bits hashed features per n-gram kind")
    max_chars: int = Field(
        3000, gt=0, description="Features come from the first max_chars characters of a document"
    )
    c: float = Field(4.0, gt=0, description="Inverse L2 regularisation strength of the logistic regression")
    seed: int = 0

    @field_validator("char_ngrams")
    @classmethod
    def _char_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= v[0] <= v[1] <= 8:
            raise ValueError(
                f"char_ngrams {list(v)}: a range [low, high] with 0 <= low <= high <= 8 (0, 0: none)"
            )
        return v

    @model_validator(mode="after")
    def _some_features(self) -> QualityModelConfig:
        if self.word_ngrams == 0 and self.char_ngrams[1] == 0:
            raise ValueError("a quality model needs word_ngrams or char_ngrams")
        overlap = sorted(set(self.positives) & set(self.negatives))
        if overlap:
            raise ValueError(f"sources both positive and negative: {overlap}")
        return self


class SourceQuality(Strict):
    """A source's use of its language's quality model: every curated document gets a `quality` score
    (the model's probability of the high-quality class); with `keep_top_share`, exactly that share of
    the documents reaching the step is kept (highest scores; ties by a seeded hash of the id), per
    curated file; with `min_score`, those scoring at least it (a per-document decision)."""

    keep_top_share: float | None = Field(None, gt=0, le=1, description="Keep exactly this share, best first")
    min_score: float | None = Field(None, ge=0, le=1, description="Keep documents scoring at least this")
    seed: int = Field(0, description="Seed of the tie-break among equal scores")

    @model_validator(mode="after")
    def _one_rule(self) -> SourceQuality:
        if self.keep_top_share is not None and self.min_score is not None:
            raise ValueError("set keep_top_share or min_score, not both")
        return self

    @property
    def filters(self) -> bool:
        return self.keep_top_share is not None or self.min_score is not None


class QualityBucket(Strict):
    """A bucket of a source's documents by quality rank: from the previous bucket's `top_share` to this
    one's (cumulative, best first), sampled `weight` times as often as the rest (weight 1)."""

    top_share: float = Field(gt=0, lt=1)
    weight: float = Field(gt=0, le=16)


def check_buckets(where: str, buckets: tuple[QualityBucket, ...]) -> None:
    shares = [b.top_share for b in buckets]
    if not buckets:
        raise ValueError(f"{where}: at least one bucket")
    if any(b <= a for a, b in zip(shares, shares[1:], strict=False)):
        raise ValueError(f"{where}: top_share must increase from bucket to bucket, got {shares}")


def check_quality(recipe: Recipe) -> None:
    """Cross-references: model sources exist in the language; a source that declares `quality` has a
    model in its language and is not one of its positives when it filters; weighted blend sources are
    scored and in the stage's mixture."""
    names = {s.name: s for s in recipe.sources}
    for lang, cfg in recipe.languages.items():
        q = cfg.quality
        if q is None:
            continue
        for field in ("positives", "negatives"):
            for j, name in enumerate(getattr(q, field)):
                where = f"languages.{lang}.quality.{field}.{j}"
                if name not in names:
                    raise ValueError(f"{where}: unknown source '{name}' (known: {list(names)})")
                if names[name].language != lang:
                    raise ValueError(
                        f"{where}: '{name}' is in language '{names[name].language}', not '{lang}'"
                    )
    for i, src in enumerate(recipe.sources):
        if src.quality is None:
            continue
        model = recipe.languages[src.language].quality
        if model is None:
            raise ValueError(
                f"sources.{i}.quality: language '{src.language}' has no quality model "
                f"(set languages.{src.language}.quality)"
            )
        if src.quality.filters and src.name in model.positives:
            raise ValueError(
                f"sources.{i}.quality: '{src.name}' is a positive (high-quality) source of the "
                f"{src.language} quality model; filter web sources by quality, never the positives"
            )
    for i, stage in enumerate(recipe.stages):
        mixture = stage.blend.mixture_sources()
        for name, buckets in stage.blend.quality_weighting.items():
            where = f"stages.{i}.blend.quality_weighting.{name}"
            if name not in mixture:
                raise ValueError(f"{where}: '{name}' is not in the stage's mixture")
            if names[name].quality is None:
                raise ValueError(f"{where}: '{name}' has no quality scores (declare sources[].quality)")
            check_buckets(where, buckets)
