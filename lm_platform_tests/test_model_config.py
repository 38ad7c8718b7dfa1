"""Llama-family architecture fields the recipe states reach the built model config."""

from __future__ import annotations

import pytest

from lm_platform.modeling.init import build_model, llama_config
from lm_platform.recipe import load_recipe
from lm_platform.recipe.loader import RecipeError
from lm_platform.recipe.schema import ModelConfig
from lm_platform_tests.conftest import write_demo_variant


def test_bundled_recipes_build_their_sources_architecture():
    vi = llama_config(load_recipe("vi").model.model_dump(), 56320, 1, 2, None)  # SmolLM2-360M
    assert (vi.hidden_size, vi.num_hidden_layers, vi.num_attention_heads, vi.num_key_value_heads) == (
        960,
        32,
        15,
        5,
    )
    assert vi.intermediate_size == 2560 and vi.max_position_embeddings == 8192 and vi.tie_word_embeddings
    assert vi.rms_norm_eps == 1e-5 and vi.head_dim == 64
    assert vi.rope_parameters == {"rope_type": "default", "rope_theta": 100000.0}
    ja = llama_config(load_recipe("ja").model.model_dump(), 32000, 1, 2, None)  # Llama-3.2-1B
    assert (ja.hidden_size, ja.num_hidden_layers, ja.num_attention_heads, ja.num_key_value_heads) == (
        2048,
        16,
        32,
        8,
    )
    assert ja.rms_norm_eps == 1e-5 and ja.head_dim == 64 and ja.tie_word_embeddings
    assert ja.rope_parameters == {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert ja.attention_bias is False and ja.mlp_bias is False


def test_scratch_model_carries_the_fields_and_runs(tmp_path):
    torch = pytest.importorskip("torch")
    fields = {
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_layers": 1,
        "num_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 24,  # not hidden_size / num_heads
        "max_position_embeddings": 256,
        "rope_theta": 500000,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        "rms_norm_eps": 1e-5,
        "attention_bias": True,
    }

    def mutate(raw):
        raw["model"] = {**raw["model"], **fields}

    recipe = load_recipe(str(write_demo_variant(tmp_path, mutate)))
    model = build_model({"kind": "scratch", "model": recipe.model.model_dump()}, 100, 1, 2, None, seed=0)
    cfg = model.config
    assert cfg.head_dim == 24 and cfg.rms_norm_eps == 1e-5 and cfg.rope_parameters["rope_type"] == "llama3"
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.out_features == 4 * 24 and attn.q_proj.bias is not None
    assert model.model.norm.variance_epsilon == 1e-5
    out = model(input_ids=torch.tensor([[1, 5, 7, 9]]))
    assert out.logits.shape == (1, 4, 100)


def test_inconsistent_model_fields_fail_at_load(tmp_path):
    def mutate(raw):
        raw["model"] = {
            **raw["model"],
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
        }

    with pytest.raises(RecipeError, match="model.rope_scaling: .*llama3' needs"):
        load_recipe(str(write_demo_variant(tmp_path, mutate)))
    with pytest.raises(ValueError, match="original_max_position_embeddings 8192 must be below"):
        ModelConfig(
            max_position_embeddings=2048,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 32,
                "low_freq_factor": 1,
                "high_freq_factor": 4,
                "original_max_position_embeddings": 8192,
            },
        )
