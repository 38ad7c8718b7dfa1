"""The recipe: everything one language-model project needs, validated at load time.

A recipe names its text sources (with licenses), how each language is normalised and filtered, how the
tokenizer is made, the model, the training stages and the evaluations. Everything downstream is a pure
function of the recipe and its inputs, so a recipe error must surface here, before any work starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# SPDX license identifiers (and LicenseRef-*) are letters, digits, '.', '-' and '+'.
SPDX_PATTERN = r"^(LicenseRef-[A-Za-z0-9.\-]+|[A-Za-z0-9][A-Za-z0-9.\-+]*)$"
# Languages the `script` filter has a rule for (lm_platform.data.filters.script_ratio).
SCRIPT_LANGS = frozenset({"ja", "vi", "en"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """One text source. `location` is a local path (relative to the recipe file) or, for `hf`, a hub id."""

    name: str = Field(pattern=NAME_PATTERN)
    location: str
    format: Literal["jsonl", "parquet", "text_dir", "hf"]
    license: str = Field(pattern=SPDX_PATTERN, description="SPDX identifier of the source's license")
    language: str
    origin: str = Field("", description="Where the text comes from (URL or description)")
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    formatter: Literal["qa"] | None = None
    max_docs: int | None = Field(None, gt=0)
    priority: int = Field(0, description="Dedup keeps the copy from the source with the higher priority")


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


FilterConfig = Annotated[
    LengthFilter | ScriptFilter | BoilerplateFilter | EncodingFilter, Field(discriminator="name")
]


class LanguageConfig(_Strict):
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFC"
    chars_per_token: float = Field(4.0, gt=0, description="Token estimate until a tokenizer exists")
    filters: tuple[FilterConfig, ...] = ()


class TokenizerConfig(_Strict):
    mode: Literal["train", "extend"] = "train"
    base: str | None = Field(None, description="Base HF tokenizer (path or hub id) when mode is 'extend'")
    model_type: Literal["bpe", "unigram"] = "bpe"
    vocab_size: int = Field(32000, ge=64)
    character_coverage: float = Field(0.9995, gt=0, le=1)
    byte_fallback: bool = True
    user_defined_symbols: tuple[str, ...] = ()
    train_stage: str | None = Field(None, description="Blend to train on; default the first stage")
    max_sentences: int = Field(2_000_000, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _base_for_extend(self) -> TokenizerConfig:
        if self.mode == "extend" and not self.base:
            raise ValueError("mode 'extend' needs 'base' (the tokenizer to extend)")
        return self


class ModelConfig(_Strict):
    init: Literal["scratch", "pretrained"] = "scratch"
    base: str | None = Field(None, description="HF checkpoint (path or hub id) when init is 'pretrained'")
    hidden_size: int = Field(256, gt=0)
    intermediate_size: int = Field(512, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    num_kv_heads: int = Field(4, gt=0)
    max_position_embeddings: int = Field(2048, gt=0)
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    eeve_tied_rule: Literal["input", "output"] = Field(
        "input",
        description="EEVE init of a new token's row when input and output embeddings are tied: 'input' = mean "
        "of its pieces' rows, 'output' = the row of its first piece",
    )

    @model_validator(mode="after")
    def _shape(self) -> ModelConfig:
        if self.init == "pretrained" and not self.base:
            raise ValueError("init 'pretrained' needs 'base' (the checkpoint to start from)")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}"
            )
        return self


class StageConfig(_Strict):
    """One training stage: its data mixture, token budget and optimisation settings."""

    name: str = Field(pattern=NAME_PATTERN)
    mixture: dict[str, float] = Field(description="source name -> share of the stage's tokens")
    target_tokens: int = Field(gt=0)
    init_from: str = Field("model", description="'model' or the name of an earlier stage")
    seq_len: int = Field(2048, gt=0)
    micro_batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    epochs: float = Field(1.0, gt=0, description="Passes over the stage's dataset; steps are derived")
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "constant", "linear", "wsd"] = "cosine"
    wsd_decay_fraction: float = Field(0.2, gt=0, le=1, description="WSD: share of steps spent decaying")
    weight_decay: float = Field(0.1, ge=0)
    trainable: Literal["all", "new_embeddings", "output_embeddings", "all_but_embeddings"] = Field(
        "all",
        description="EEVE policies: 3 = new_embeddings, 4 = output_embeddings, 6 = all, 7 = all_but_embeddings",
    )
    val_fraction: float = Field(0.05, ge=0, lt=1)
    log_every: int = Field(10, gt=0)
    seed: int = 0
    token_budget: int | None = Field(
        None, gt=0, description="Tokens to train on (steps derived); default `epochs` passes over the dataset"
    )
    checkpoint_every: int | None = Field(None, gt=0, description="Steps between checkpoints (and at the end)")
    keep_last: int = Field(2, gt=0, description="Step checkpoints kept for resume")
    nproc_per_node: int = Field(1, gt=0, description="Training processes (torchrun) per node")

    @field_validator("mixture")
    @classmethod
    def _ratios(cls, mixture: dict[str, float]) -> dict[str, float]:
        if not mixture:
            raise ValueError("mixture is empty")
        bad = {k: v for k, v in mixture.items() if v <= 0}
        if bad:
            raise ValueError(f"ratios must be positive: {bad}")
        total = sum(mixture.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"ratios sum to {total:.6g}, expected 1")
        return mixture


class EvalConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["perplexity"] = "perplexity"
    location: str = Field(description="JSONL file of held-out documents with 'text' and 'lang'")
    stage: str | None = Field(None, description="Checkpoint to score; default the last stage")
    max_docs: int | None = Field(None, gt=0)


class GenerationConfig(_Strict):
    """Samples written with every checkpoint: the same prompts and sampling settings each time."""

    prompts: tuple[str, ...] = ()
    max_new_tokens: int = Field(32, gt=0)
    do_sample: bool = True
    temperature: float = Field(0.8, gt=0)
    top_k: int = Field(50, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 0


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
    generation: GenerationConfig = GenerationConfig()

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
            for src in stage.mixture:
                if src not in names:
                    raise ValueError(f"stages.{i}.mixture: unknown source '{src}' (known: {names})")
            if stage.init_from != "model" and stage.init_from not in seen:
                raise ValueError(
                    f"stages.{i}.init_from: '{stage.init_from}' is neither 'model' nor an earlier stage "
                    f"(earlier: {seen})"
                )
            seen.append(stage.name)
        stage_names = [s.name for s in self.stages]
        if self.tokenizer.train_stage is not None and self.tokenizer.train_stage not in stage_names:
            raise ValueError(f"tokenizer.train_stage: unknown stage '{self.tokenizer.train_stage}'")
        for i, ev in enumerate(self.evaluations):
            if ev.stage is not None and ev.stage not in stage_names:
                raise ValueError(f"evaluations.{i}.stage: unknown stage '{ev.stage}'")
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


def _unique(what: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what}: duplicate names {dupes}")
