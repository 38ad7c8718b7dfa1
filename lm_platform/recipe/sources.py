"""The recipe's text sources: where each comes from, its format, license and language."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lm_platform.recipe.base import NAME_PATTERN, Strict
from lm_platform.recipe.licenses import SpdxLicense
from lm_platform.recipe.quality import SourceQuality


class SourceConfig(Strict):
    """One text source. `location` is a local path (relative to the recipe file) or, for `hf`, a hub id."""

    name: str = Field(pattern=NAME_PATTERN)
    location: str
    format: Literal["jsonl", "parquet", "text_dir", "pdf_dir", "hf"]
    license: SpdxLicense = Field(
        description="SPDX identifier of the source's license (LicenseRef-<name>: custom)"
    )
    language: str
    origin: str = Field("", description="Where the text comes from (URL or description)")
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    formatter: Literal["qa"] | None = None
    max_docs: int | None = Field(None, gt=0)
    max_est_tokens: int | None = Field(
        None, gt=0, description="Stop reading after this many estimated tokens"
    )
    max_doc_bytes: int = Field(
        8_000_000, gt=0, description="Larger documents are quarantined, not read into the corpus"
    )
    license_manifest: str | None = Field(
        None, description="pdf_dir/text_dir: a JSON or CSV sidecar mapping file names to SPDX licenses"
    )
    exclude_from_training: bool = Field(
        False,
        description="Read, curated and deduplicated (e.g. the text a reference LM learns from), but never in the "
        "tokenizer's sample or a stage's blend; its license need not be on the license_allowlist",
    )
    priority: int = Field(0, description="Dedup keeps the copy from the source with the higher priority")
    shards: int = Field(
        1,
        ge=1,
        le=10_000,
        description="Curate in this many shards, each a Dagster partition (1: unpartitioned); a `hf` "
        "source is also read in these shards, by data file",
    )

    quality: SourceQuality | None = Field(
        None,
        description="Score the curated documents with the language's quality model (a `quality` column), "
        "optionally keeping only the top share (recipe/quality.py)",
    )

    @property
    def sharded_read(self) -> bool:
        """Whether the corpus read itself is sharded by the dataset's files (`hf` with shards > 1)."""
        return self.format == "hf" and self.shards > 1
