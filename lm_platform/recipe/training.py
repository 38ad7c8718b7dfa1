"""The recipe's model and training stages. A stage has three typed sections, each read by one part of the
platform: `blend` (which documents, how many tokens: data/blending/blend.py), `pack` (how they become sequences:
data/blending/pack.py) and `train` (how the model learns from them: `lm_platform.recipe.trainer.TrainConfig`, the
section the trainer validates from its job file).

Recipes written before the sections existed used flat stage keys (`lr`, `seq_len`, `mixture`, ...);
`upgrade_flat_stage_keys` maps them to their section with a deprecation message naming the new place.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from lm_platform.recipe.base import NAME_PATTERN, Strict, did_you_mean
from lm_platform.recipe.quality import QualityBucket
from lm_platform.recipe.trainer import TrainConfig


class BlendConfig(Strict):
    """Which documents a stage trains on: shares of its sources and a token target (data/blending/blend.py)."""

    mixture: dict[str, float] | Literal["recommended"] = Field(
        description="source (or group) name -> share of the stage's tokens; or 'recommended': the mixture "
        "the stage's mixture_search recommends (asset mixture_recommendation/<stage>)"
    )
    target_tokens: int = Field(gt=0)
    groups: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="group name -> member sources; a mixture key may name a group, whose share is split "
        "among its members in proportion to their available tokens",
    )
    upsample: bool = Field(False, description="Repeat sources (up to their epoch cap) to meet the target")
    max_epochs: float = Field(4.0, ge=1, description="Epoch cap per source when upsampling")
    source_max_epochs: dict[str, float] = Field(default_factory=dict, description="Per-source epoch caps")
    quality_weighting: dict[str, tuple[QualityBucket, ...]] = Field(
        default_factory=dict,
        description="source -> buckets by quality rank (cumulative top shares, best first) and their sampling "
        "weights: within the source's share of the stage, its top buckets are drawn `weight` times as often",
    )
    on_shortfall: Literal["check", "record", "error"] = Field(
        "check",
        description="When the sources cannot meet target_tokens: 'check' blends what there is and fails "
        "the blend's blocking 'target_met' check when the shortfall exceeds max_shortfall (training does "
        "not start); 'record' allows any shortfall (blends what there is and reports it); 'error' fails "
        "the blend",
    )
    max_shortfall: float = Field(
        0.05, ge=0, le=1, description="Share of target_tokens the blend may fall short by under 'check'"
    )

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token_estimate" in data:
            raise ValueError(
                "'token_estimate' was removed: blends count exact tokens (each source is tokenized once with "
                "the final tokenizer into tokens/<source>, and the blend selects documents by those counts); "
                "delete the field"
            )
        return data

    def epoch_cap(self, source: str) -> float:
        """How many times a source's documents may be used in this stage."""
        if not self.upsample:
            return 1.0
        return self.source_max_epochs.get(source, self.max_epochs)

    # The searched sources, for `mixture: recommended` (set by the stage from its mixture_search).
    _searched: tuple[str, ...] = PrivateAttr(default=())

    @property
    def recommended(self) -> bool:
        """Whether the stage takes its mixture_search's recommendation."""
        return self.mixture == "recommended"

    def mixture_sources(self) -> list[str]:
        """Every source the stage draws from (groups expanded), in mixture order (the searched sources
        when the stage takes the recommended mixture)."""
        if self.recommended:
            return list(self._searched)
        out: list[str] = []
        for key in self.mixture:
            out += list(self.groups.get(key, (key,)))
        return out

    @field_validator("mixture")
    @classmethod
    def _ratios(cls, mixture: dict[str, float] | str) -> dict[str, float] | str:
        if isinstance(mixture, str):
            return mixture
        if not mixture:
            raise ValueError("mixture is empty")
        bad = {k: v for k, v in mixture.items() if v <= 0}
        if bad:
            raise ValueError(f"ratios must be positive: {bad}")
        total = sum(mixture.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"ratios sum to {total:.6g}, expected 1")
        return mixture


class PackConfig(Strict):
    """How a stage's blend becomes fixed-length training rows (data/blending/pack.py)."""

    seq_len: int = Field(2048, gt=0)
    val_fraction: float = Field(0.05, ge=0, lt=1)
    shuffle_buffer: int = Field(
        10_000,
        ge=0,
        description="> 0: the stage's whole document list is shuffled (seeded) before packing (the list is a "
        "few integers per document, so every size shuffles everything); 0: the blend's order",
    )
    loss_mask: bool = Field(
        False, description="Write loss masks (documents' meta.loss_spans) with the shards"
    )
    seed: int = Field(0, description="Seed of the packing shuffle")

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "workers" in data:
            raise ValueError(
                "'workers' was removed: packing no longer tokenizes (it copies each document's ids from "
                "tokens/<source>); tokenization's processes are 'tokenizer.workers'"
            )
        return data


class StageConfig(Strict):
    """One training stage: where its model starts, and its `blend`, `pack` and `train` sections."""

    name: str = Field(pattern=NAME_PATTERN)
    init_from: str = Field("model", description="'model' or the name of an earlier stage")
    eval_every: int | None = Field(
        None, gt=0, description="Step checkpoints at multiples of this are kept as model versions to score"
    )
    blend: BlendConfig
    pack: PackConfig = PackConfig()
    train: TrainConfig = TrainConfig()
    mixture_search: MixtureSearchConfig | None = Field(
        None,
        description="Search this stage's mixture with proxy runs (assets mixture_candidates/<stage> ... "
        "mixture_recommendation/<stage>); the stage takes the result with blend.mixture: recommended",
    )

    @model_validator(mode="after")
    def _recommended(self) -> StageConfig:
        if self.blend.recommended:
            if self.mixture_search is None:
                raise ValueError("blend.mixture 'recommended' needs a mixture_search section on the stage")
            if not self.mixture_search.sources:
                raise ValueError(
                    "blend.mixture 'recommended': name the searched sources in mixture_search.sources"
                )
            self.blend._searched = tuple(self.mixture_search.sources)
        return self

    def searched_sources(self) -> list[str]:
        """The sources the stage's mixture_search searches: those it names, else the stage's mixture's."""
        if self.mixture_search is None:
            return []
        return list(self.mixture_search.sources) or self.blend.mixture_sources()


# Flat stage keys of recipes written before the sections: old key -> (section, new key) places.
FLAT_STAGE_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    # The blend keys that existed flat (max_shortfall came after the sections: it exists only in `blend`).
    **{k: (("blend", k),) for k in BlendConfig.model_fields if k != "max_shortfall"},
    "token_estimate": (("blend", "token_estimate"),),  # removed: BlendConfig says what replaced it
    "seq_len": (("pack", "seq_len"),),
    "val_fraction": (("pack", "val_fraction"),),
    "pack_shuffle_buffer": (("pack", "shuffle_buffer"),),
    "pack_workers": (("pack", "workers"),),
    "pack_loss_mask": (("pack", "loss_mask"),),
    # The training keys that existed flat (fields added to TrainConfig since then exist only in `train`).
    **{
        k: (("train", k),)
        for k in (
            "micro_batch_size",
            "grad_accum",
            "epochs",
            "token_budget",
            "lr",
            "min_lr_ratio",
            "warmup_steps",
            "schedule",
            "wsd_decay_fraction",
            "weight_decay",
            "trainable",
            "log_every",
            "checkpoint_every",
            "keep_last",
            "nproc_per_node",
        )
    },  # fmt: skip
    # One flat seed used to drive both the packing shuffle and the trainer.
    "seed": (("train", "seed"), ("pack", "seed")),
}


def upgrade_flat_stage_keys(stage: Any, where: str) -> tuple[Any, list[str]]:
    """Move a stage's flat keys into their sections. Returns the upgraded mapping and one deprecation
    message per moved key (e.g. `stages.0.lr is deprecated: use stages.0.train.lr`). A key given both flat
    and in its section is an error naming both places."""
    if not isinstance(stage, dict):
        return stage, []
    flat = [k for k in stage if k in FLAT_STAGE_KEYS]
    if not flat:
        return stage, []
    out = {k: v for k, v in stage.items() if k not in FLAT_STAGE_KEYS}
    messages = []
    for key in flat:
        places = FLAT_STAGE_KEYS[key]
        for section, new in places:
            current = out.get(section, {})
            if not isinstance(current, dict):
                continue  # the section's own validation reports it
            if new in current:
                raise ValueError(
                    f"{where}.{key} and {where}.{section}.{new} are both given; keep {section}.{new}"
                )
            out[section] = {**current, new: stage[key]}
        messages.append(
            f"{where}.{key} is deprecated: use " + " and ".join(f"{where}.{s}.{n}" for s, n in places)
        )
    return out, messages


class RopeScalingConfig(Strict):
    """RoPE frequency scaling, as in a Llama-family `config.json`'s `rope_scaling` (Llama-3.x: 'llama3')."""

    rope_type: Literal["linear", "dynamic", "yarn", "longrope", "llama3"]
    factor: float = Field(gt=0)
    low_freq_factor: float | None = Field(None, gt=0, description="llama3")
    high_freq_factor: float | None = Field(None, gt=0, description="llama3")
    original_max_position_embeddings: int | None = Field(None, gt=0, description="llama3, yarn, longrope")

    @model_validator(mode="after")
    def _llama3(self) -> RopeScalingConfig:
        if self.rope_type == "llama3":
            missing = [
                k
                for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(f"rope_type 'llama3' needs {missing}")
            if self.high_freq_factor <= self.low_freq_factor:  # type: ignore[operator]
                raise ValueError("high_freq_factor must be larger than low_freq_factor")
        return self


class ModelConfig(Strict):
    """A Llama-family architecture. Scratch models are built from these fields; for a pretrained base they
    should mirror its `config.json` (the checkpoint's own config is what loads)."""

    init: Literal["scratch", "pretrained"] = "scratch"
    base: str | None = Field(None, description="HF checkpoint (path or hub id) when init is 'pretrained'")
    hidden_size: int = Field(256, gt=0)
    intermediate_size: int = Field(512, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    num_kv_heads: int = Field(4, gt=0)
    max_position_embeddings: int = Field(2048, gt=0)
    rope_theta: float = 10000.0
    rope_scaling: RopeScalingConfig | None = Field(None, description="RoPE scaling (Llama-3.x: 'llama3')")
    head_dim: int | None = Field(
        None, gt=0, description="Attention head size; default hidden_size / num_heads"
    )
    rms_norm_eps: float = Field(1e-6, gt=0, description="RMSNorm epsilon (Llama-3.x and SmolLM2: 1e-5)")
    attention_bias: bool = Field(False, description="Biases in the q/k/v/o projections")
    mlp_bias: bool = Field(False, description="Biases in the MLP projections")
    hidden_act: Literal["silu", "gelu", "gelu_pytorch_tanh", "relu"] = "silu"
    initializer_range: float = Field(0.02, gt=0, description="Std of the initial weights (scratch)")
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
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads} (or set head_dim)"
            )
        if self.head_dim is not None and self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even (RoPE rotates pairs of dimensions)")
        scaling = self.rope_scaling
        if (
            scaling is not None
            and scaling.original_max_position_embeddings is not None
            and scaling.original_max_position_embeddings >= self.max_position_embeddings
        ):
            raise ValueError(
                f"rope_scaling.original_max_position_embeddings {scaling.original_max_position_embeddings} must "
                f"be below max_position_embeddings {self.max_position_embeddings} (scaling extends the context)"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}"
            )
        return self


class GenerationConfig(Strict):
    """Samples written with every checkpoint: the same prompts and sampling settings each time."""

    prompts: tuple[str, ...] = ()
    max_new_tokens: int = Field(32, gt=0)
    do_sample: bool = True
    temperature: float = Field(0.8, gt=0)
    top_k: int = Field(50, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 0


# ---------------------------------------------------------------------------------------------------
# A stage's `mixture_search` section (RegMix-style): small proxy models are trained on seeded Dirichlet
# samples of mixtures (around the stage's own mixture, within each source's bounds), each scored by bits
# per byte on named evaluation sets; a predictor fitted from mixture weights to that score gives the
# mixture it predicts best within the bounds, checked by one more proxy. The stage takes it with
# `blend.mixture: recommended`. The code that runs it is `lm_platform/mixture/`.

# A proxy is a tiny Llama trained from scratch: small enough that a search of 16 runs on a laptop CPU.
PROXY_MODEL = ModelConfig(
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=2,
    num_kv_heads=2,
    max_position_embeddings=256,
)


class SourceBounds(Strict):
    """The share of the proxy's tokens a source may take in a candidate (and in the recommendation)."""

    min: float = Field(0.0, ge=0, le=1)
    max: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> SourceBounds:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ProxyConfig(Strict):
    """What one proxy run is: its model shape, its token budget (the blend's target), packing and training."""

    model: ModelConfig = PROXY_MODEL
    tokens: int = Field(gt=0, description="Packed tokens in each proxy's blend (its token budget)")
    pack: PackConfig = PackConfig(seq_len=128, val_fraction=0.05)
    train: TrainConfig = TrainConfig(micro_batch_size=8, lr=3e-3, warmup_steps=2, log_every=5)


class TargetTerm(Strict):
    """One term of the search's target: bits per byte of a perplexity evaluation (optionally one language
    of it), with a weight. The target is the weighted mean of the terms; lower is better."""

    evaluation: str = Field(description="Name of a `perplexity` evaluation of the recipe")
    language: str | None = Field(None, description="Score only this language's documents of the set")
    weight: float = Field(1.0, gt=0)


class MixtureSearchConfig(Strict):
    """Search a stage's mixture: `candidates` proxies on seeded Dirichlet samples around the stage's
    mixture (uniform where the stage takes `mixture: recommended`), a predictor fitted from the weights to
    the target, and the predicted best mixture within the bounds, verified by one more proxy."""

    sources: dict[str, SourceBounds] = Field(
        default_factory=dict,
        description="source -> bounds of its share; default: the stage's mixture sources, each in [0, 1]",
    )
    candidates: int = Field(
        16, ge=3, description="Proxy runs on sampled mixtures (RegMix: many more than sources)"
    )
    seed: int = 0
    concentration: float = Field(
        1.0,
        gt=0,
        description="Dirichlet concentration per source (x the number of sources x the centre's share): "
        "small spreads the candidates widely, large keeps them near the stage's mixture",
    )
    predictor: Literal["linear", "log_linear"] = Field(
        "log_linear",
        description="Ridge regression of the target (linear) or of its logarithm (log_linear, the data "
        "mixing laws' form) on the mixture weights",
    )
    ridge: float = Field(1e-3, ge=0, description="L2 penalty of the predictor's regression")
    proxy: ProxyConfig
    target: tuple[TargetTerm, ...] = Field(min_length=1)

    def bounds(self, sources: list[str]) -> dict[str, tuple[float, float]]:
        """(min, max) per searched source (`sources`: the default list when the section names none)."""
        names = list(self.sources) or sources
        return {
            s: (self.sources[s].min, self.sources[s].max) if s in self.sources else (0.0, 1.0) for s in names
        }


def check_mixture_search(where: str, search: MixtureSearchConfig, sources: list[str], recipe) -> list[str]:
    """Cross-references of a stage's `mixture_search` (`sources`: the sources it searches), one message
    per mistake."""
    problems = []
    known = [s.name for s in recipe.sources]
    excluded = {s.name for s in recipe.sources if s.exclude_from_training}
    for src in search.sources:
        if src not in known:
            problems.append(f"{where}.sources.{src}: no such source" + did_you_mean(src, known))
        elif src in excluded:
            problems.append(f"{where}.sources.{src}: the source is marked exclude_from_training")
    if not sources:
        problems.append(
            f"{where}.sources: name the sources to search (the stage takes 'mixture: recommended')"
        )
    elif len(sources) < 2:
        problems.append(f"{where}.sources: a search needs at least two sources, got {sources}")
    bounds = search.bounds(sources)
    if bounds and sum(lo for lo, _ in bounds.values()) > 1 + 1e-9:
        problems.append(f"{where}.sources: the minimum shares sum to more than 1")
    if bounds and sum(hi for _, hi in bounds.values()) < 1 - 1e-9:
        problems.append(f"{where}.sources: the maximum shares sum to less than 1")
    evals = {e.name: e for e in recipe.evaluations}
    for j, term in enumerate(search.target):
        ev = evals.get(term.evaluation)
        if ev is None:
            problems.append(
                f"{where}.target.{j}.evaluation: no evaluation '{term.evaluation}'"
                + (did_you_mean(term.evaluation, evals) or f" (known: {', '.join(evals) or 'none'})")
            )
        elif ev.kind != "perplexity":
            problems.append(
                f"{where}.target.{j}.evaluation: '{term.evaluation}' is a {ev.kind} evaluation; the target is "
                "bits per byte, so it names perplexity evaluations"
            )
        if term.language is not None and term.language not in recipe.languages:
            problems.append(
                f"{where}.target.{j}.language: '{term.language}' has no entry in 'languages'"
                + did_you_mean(term.language, recipe.languages)
            )
    return problems


StageConfig.model_rebuild()  # its `mixture_search` type is defined above
