"""The recipe's last mile: instruction sets and LoRA adapters (`finetune`), chained mergekit merges
(`merges`) and exported model directories (`exports`).

Models in merges and exports are named by reference, never by hub id:
- `checkpoint/<stage>`, `adapter/<set>`, `merged/<name>`: what the platform built (under its storage);
- an absolute local path to an HF model directory (`/models/x`); it must exist when the merge runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from lm_platform.recipe.base import NAME_PATTERN, Strict
from lm_platform.recipe.licenses import SpdxLicense, not_on_allowlist

MODEL_KINDS = ("checkpoint", "adapter", "merged")


class LoraConfig(Strict):
    """LoRA through PEFT: rank, scaling, dropout, which linear layers, and the new-token rows."""

    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target: Literal["attention", "all_linear"] = Field(
        "attention", description="'attention': q/k/v/o projections; 'all_linear': also the MLP's"
    )
    train_new_tokens: bool = Field(
        True,
        description="Train the input and output embedding rows of tokens the base never trained (EEVE's new "
        "tokens and the chat template's tokens, added or already in the vocabulary) through PEFT's "
        "trainable_token_indices (ties kept; an untied output head gets the same rows)",
    )


class SFTConfig(Strict):
    """How an adapter is trained on its instruction set (a compact loop with per-token masked loss)."""

    lr: float = Field(2e-3, gt=0)
    epochs: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(8, gt=0)
    max_len: int = Field(256, gt=8, description="Longest rendered example in tokens (longer ones are cut)")
    packing: bool = Field(False, description="Pack examples into rows of max_len (else one padded per row)")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps")
    seed: int = 0


class InstructionSet(Strict):
    """A local instruction file (JSONL): Alpaca records (instruction, input, output) or chat records
    (`messages`: [{role, content}, ...]). One `adapter/<name>` asset is trained per set."""

    name: str = Field(pattern=NAME_PATTERN)
    location: str
    format: Literal["alpaca", "chat"]
    license: SpdxLicense
    language: str
    origin: str = ""
    lora: LoraConfig | None = Field(None, description="Overrides finetune.lora for this set")
    train: SFTConfig | None = Field(None, description="Overrides finetune.train for this set")
    merge_into_base: bool = Field(
        True, description="Also write the adapter merged into full weights (the version evaluation scores)"
    )


class FinetuneConfig(Strict):
    base: str = Field(description="The model adapters train on: checkpoint/<stage> or an absolute path")
    chat_template: Literal["chatml"] = "chatml"
    system_prompt: str | None = Field(None, description="System message prepended to Alpaca records")
    lora: LoraConfig = LoraConfig()
    train: SFTConfig = SFTConfig()
    instructions: tuple[InstructionSet, ...] = Field(min_length=1)

    def lora_for(self, s: InstructionSet) -> LoraConfig:
        return s.lora or self.lora

    def train_for(self, s: InstructionSet) -> SFTConfig:
        return s.train or self.train


class MergeModel(Strict):
    """One input of a merge, with mergekit's per-model parameters (None: mergekit's default)."""

    model: str
    weight: float | None = None
    density: float | None = Field(None, gt=0, le=1)
    epsilon: float | None = Field(None, ge=0, lt=1)


class MergeConfig(Strict):
    """One mergekit merge: `merged/<name>`. Inputs may be stage checkpoints, adapters or earlier merges."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)  # `lambda` or `lambda_`

    name: str = Field(pattern=NAME_PATTERN)
    method: Literal["dare_ties", "della_linear", "ties", "linear", "task_arithmetic", "della"]
    base: str = Field(description="base_model of the merge (the reference task vectors are taken from)")
    models: tuple[MergeModel, ...] = Field(min_length=1)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    normalize: bool = True
    lambda_: float | None = Field(None, alias="lambda", description="della's scaling of the merged delta")
    seed: int = Field(0, description="Seed of DARE/DELLA's random drops (reproducible merges)")
    tokenizer: str | None = Field(
        None,
        description="Model whose tokenizer the merge keeps (default: the input whose vocabulary holds every "
        "other input's tokens at the same ids, e.g. an adapter that added the chat tokens); mergekit "
        "`tokenizer.source`",
    )

    @model_validator(mode="after")
    def _della_epsilon(self) -> MergeConfig:
        for j, m in enumerate(self.models):
            if m.epsilon is not None and not self.method.startswith("della"):
                raise ValueError(
                    f"models.{j}.epsilon: only della methods take epsilon (method: {self.method})"
                )
            if (
                m.epsilon is not None
                and m.density is not None
                and (m.density - m.epsilon / 2 < 0 or m.density + m.epsilon / 2 > 1)
            ):
                raise ValueError(f"models.{j}: density ± epsilon/2 must stay within [0, 1]")
        return self


class HubConfig(Strict):
    """Optional push of an export to a model hub; the token comes from the environment variable named
    here (a Kubernetes Secret in the k8s profile), never from the recipe."""

    repo_id: str
    token_env: str = "HF_TOKEN"
    private: bool = True


class ExportConfig(Strict):
    """`export/<name>`: a model directory a user ships, with tokenizer, chat template and model card."""

    name: str = Field(pattern=NAME_PATTERN)
    model: str
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto': the model's own dtype"
    )
    license: SpdxLicense | None = Field(None, description="The license the card declares (default: derived)")
    hub: HubConfig | None = None


def check_model_ref(ref: str) -> tuple[str, str]:
    """(kind, name) of a model reference: kind in MODEL_KINDS, or 'path' for an absolute local path.
    Anything else (a hub id, a relative path) is an error: merges never fall through to a download."""
    if ref.startswith("/"):
        return "path", ref
    kind, _, name = ref.partition("/")
    if kind in MODEL_KINDS and name and "/" not in name:
        return kind, name
    raise ValueError(
        f"'{ref}' is not checkpoint/<stage>, adapter/<set>, merged/<name> or an absolute local path "
        "(hub ids are not accepted: nothing is downloaded)"
    )


def check_finetune(
    finetune: FinetuneConfig | None,
    merges: tuple[MergeConfig, ...],
    exports: tuple[ExportConfig, ...],
    stages: list[str],
    languages: list[str],
    allowlist: tuple[str, ...],
) -> None:
    """Cross-checks between the sections; errors name the field path."""
    adapters: list[str] = []
    if finetune is not None:
        _ref("finetune.base", finetune.base, stages, [], [], allow=("checkpoint", "path"))
        names = [s.name for s in finetune.instructions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"finetune.instructions: duplicate names {dupes}")
        for i, s in enumerate(finetune.instructions):
            if s.language not in languages:
                raise ValueError(
                    f"finetune.instructions.{i}.language: '{s.language}' has no entry in 'languages'"
                )
            if s.license not in allowlist:
                raise ValueError(
                    f"finetune.instructions.{i}.license: {not_on_allowlist([s.license])} "
                    f"(allowlist: {', '.join(allowlist)})"
                )
        adapters = names
    earlier: list[str] = []
    for i, m in enumerate(merges):
        if m.name in earlier:
            raise ValueError(f"merges.{i}.name: duplicate merge '{m.name}'")
        _ref(f"merges.{i}.base", m.base, stages, adapters, earlier)
        for j, mm in enumerate(m.models):
            _ref(f"merges.{i}.models.{j}.model", mm.model, stages, adapters, earlier)
        if m.tokenizer is not None:
            _ref(f"merges.{i}.tokenizer", m.tokenizer, stages, adapters, earlier)
        earlier.append(m.name)
    seen: list[str] = []
    for i, e in enumerate(exports):
        if e.name in seen:
            raise ValueError(f"exports.{i}.name: duplicate export '{e.name}'")
        seen.append(e.name)
        _ref(f"exports.{i}.model", e.model, stages, adapters, earlier)


def _ref(
    where: str,
    ref: str,
    stages: list[str],
    adapters: list[str],
    merges: list[str],
    allow: tuple[str, ...] = ("checkpoint", "adapter", "merged", "path"),
) -> None:
    try:
        kind, name = check_model_ref(ref)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if kind not in allow:
        raise ValueError(f"{where}: '{ref}' must be one of {', '.join(allow)}")
    known = {"checkpoint": stages, "adapter": adapters, "merged": merges}.get(kind)
    if known is not None and name not in known:
        what = {"checkpoint": "stage", "adapter": "instruction set", "merged": "earlier merge"}[kind]
        raise ValueError(f"{where}: unknown {what} '{name}' (known: {known})")
