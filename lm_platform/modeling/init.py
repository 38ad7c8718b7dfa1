"""Build the model a training stage starts from."""

from __future__ import annotations

from typing import Any


def llama_config(model: dict[str, Any], vocab_size: int, bos_id: int, eos_id: int, pad_id: int):
    """A `LlamaConfig` from the recipe's model section (a dict of `ModelConfig` fields)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=model["hidden_size"],
        intermediate_size=model["intermediate_size"],
        num_hidden_layers=model["num_layers"],
        num_attention_heads=model["num_heads"],
        num_key_value_heads=model["num_kv_heads"],
        max_position_embeddings=model["max_position_embeddings"],
        rope_theta=model["rope_theta"],
        tie_word_embeddings=model["tie_word_embeddings"],
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def build_model(init: dict[str, Any], vocab_size: int, bos_id: int, eos_id: int, pad_id: int, seed: int):
    """`init` is {"kind": "scratch", "model": {...}} or {"kind": "pretrained", "path": dir-or-hub-id}."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    if init["kind"] == "pretrained":
        model = AutoModelForCausalLM.from_pretrained(init["path"], torch_dtype=torch.float32)
        if model.get_input_embeddings().num_embeddings != vocab_size:
            raise ValueError(
                f"checkpoint {init['path']} has {model.get_input_embeddings().num_embeddings} embeddings, "
                f"tokenizer has {vocab_size}: vocabulary extension needs the EEVE initialisation"
            )
        return model
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(init["model"], vocab_size, bos_id, eos_id, pad_id))
