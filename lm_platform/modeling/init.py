"""Build the model a training stage starts from: from the recipe's config, or from a checkpoint
(a local HF directory or a hub id), growing the vocabulary with EEVE when the tokenizer was extended."""

from __future__ import annotations

from typing import Any

from lm_platform.modeling.eeve import extend_embeddings, read_eeve
from lm_platform.recipe.model_init import EEVE_TIED_RULE, ModelInit, ScratchInit, TiedRule, parse_init
from lm_platform.recipe.training import ModelConfig


def llama_config(
    model: ModelConfig | dict[str, Any], vocab_size: int, bos_id: int, eos_id: int, pad_id: int | None
):
    """A `LlamaConfig` from the recipe's model section (a `ModelConfig`, or a mapping of its fields)."""
    from transformers import LlamaConfig

    model = ModelConfig.model_validate(model).model_dump() if isinstance(model, dict) else model.model_dump()

    rope = {"rope_type": "default", "rope_theta": float(model["rope_theta"])}
    scaling = model.get("rope_scaling")
    if scaling:
        rope.update({k: v for k, v in scaling.items() if v is not None})
    optional = {
        k: model[k]
        for k in ("head_dim", "rms_norm_eps", "attention_bias", "mlp_bias", "hidden_act", "initializer_range")
        if model.get(k) is not None
    }
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=model["hidden_size"],
        intermediate_size=model["intermediate_size"],
        num_hidden_layers=model["num_layers"],
        num_attention_heads=model["num_heads"],
        num_key_value_heads=model["num_kv_heads"],
        max_position_embeddings=model["max_position_embeddings"],
        rope_parameters=rope,
        tie_word_embeddings=model["tie_word_embeddings"],
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        **optional,
    )


def build_model(
    init: ModelInit | dict[str, Any],
    vocab_size: int,
    bos_id: int,
    eos_id: int,
    pad_id: int | None,
    seed: int,
    tokenizer_dir: str | None = None,
    tied_rule: TiedRule = EEVE_TIED_RULE,
):
    """`init` is a `ScratchInit` (the recipe's `ModelConfig`) or a `PretrainedInit` (a directory or hub id),
    or its mapping ({"kind": "scratch", "model": {...}}, {"kind": "pretrained", "path": ...}).

    A pretrained model whose vocabulary is smaller than the tokenizer's is extended with EEVE when the
    tokenizer directory carries `eeve.json` describing exactly that extension.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    init = parse_init(init)
    if isinstance(init, ScratchInit):
        torch.manual_seed(seed)
        return LlamaForCausalLM(llama_config(init.model, vocab_size, bos_id, eos_id, pad_id))
    model = AutoModelForCausalLM.from_pretrained(init.path, dtype=torch.float32)
    have = model.get_input_embeddings().num_embeddings
    if have == vocab_size:
        return model
    spec = read_eeve(tokenizer_dir) if tokenizer_dir else None
    if spec is None or spec.vocab_size != vocab_size:
        raise ValueError(
            f"checkpoint {init.path} has {have} embeddings, the tokenizer has {vocab_size}; growing the "
            f"vocabulary needs the tokenizer's eeve.json describing {have} -> {vocab_size}"
            + ("" if spec is None else f" (it describes {spec.base_vocab_size} -> {spec.vocab_size})")
        )
    extend_embeddings(model, spec, tied_rule)
    return model
