"""The perplexity filter's settings (CCNet-style KenLM perplexity, absolute thresholds).

The filter itself runs in `lm_platform.data.curation.curate` (`PerplexityGate`): it scores documents with the
language's reference model, which the chain's other filters do not need.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lm_platform.recipe.base import StrictConfig


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
