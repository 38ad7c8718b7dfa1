"""Recipes written before the stage sections (flat stage keys) still load, each moved key with a
deprecation message naming its new place, into the same recipe as the sectioned form."""

from __future__ import annotations

import pytest
import yaml

from lm_platform.recipe import RecipeDeprecationWarning, RecipeError, load_recipe, parse_recipe
from lm_platform.recipe.loader import BUNDLED_DIR
from lm_platform.recipe.training import FLAT_STAGE_KEYS, upgrade_flat_stage_keys


def _flat(stage: dict) -> dict:
    """A sectioned stage written the old way: every section's keys at the stage's top level."""
    renamed = {
        "shuffle_buffer": "pack_shuffle_buffer",
        "workers": "pack_workers",
        "loss_mask": "pack_loss_mask",
    }
    out = {k: v for k, v in stage.items() if k not in ("blend", "pack", "train")}
    out.update(stage.get("blend", {}))
    out.update(stage.get("train", {}))
    out.update({renamed.get(k, k): v for k, v in stage.get("pack", {}).items()})
    return out


def _raw(name: str = "demo") -> dict:
    return yaml.safe_load((BUNDLED_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def test_flat_stage_keys_load_into_the_sections_with_a_message_naming_the_new_place():
    raw = _raw()
    raw["stages"] = [_flat(s) for s in raw["stages"]]
    with pytest.warns(RecipeDeprecationWarning) as caught:
        old = parse_recipe(raw, BUNDLED_DIR, origin="old.yaml")
    messages = [str(w.message) for w in caught]
    assert "old.yaml: stages.0.lr is deprecated: use stages.0.train.lr" in messages
    assert "old.yaml: stages.0.seq_len is deprecated: use stages.0.pack.seq_len" in messages
    assert "old.yaml: stages.1.mixture is deprecated: use stages.1.blend.mixture" in messages
    assert "old.yaml: stages.1.min_lr_ratio is deprecated: use stages.1.train.min_lr_ratio" in messages
    assert old == load_recipe("demo")
    assert old.stages[0].train.lr == 3.0e-3 and old.stages[0].pack.seq_len == 128
    assert old.stages[0].blend.target_tokens == 30000


@pytest.mark.parametrize("name", ["vi", "ja"])
def test_bundled_recipes_in_the_old_form_load_to_the_same_recipe(name):
    raw = _raw(name)
    raw["stages"] = [_flat(s) for s in raw["stages"]]
    with pytest.warns(RecipeDeprecationWarning):
        assert parse_recipe(raw, BUNDLED_DIR, origin=name) == load_recipe(name)


def test_renamed_pack_keys_and_the_shared_seed():
    stage, messages = upgrade_flat_stage_keys(
        {"name": "s", "pack_workers": 3, "pack_loss_mask": True, "pack_shuffle_buffer": 7, "seed": 5},
        "stages.2",
    )
    assert stage["pack"] == {"workers": 3, "loss_mask": True, "shuffle_buffer": 7, "seed": 5}
    assert stage["train"] == {"seed": 5}
    assert "stages.2.pack_workers is deprecated: use stages.2.pack.workers" in messages
    assert "stages.2.seed is deprecated: use stages.2.train.seed and stages.2.pack.seed" in messages


def test_every_old_flat_key_has_a_place():
    old_keys = {
        "mixture", "target_tokens", "seq_len", "micro_batch_size", "grad_accum", "epochs", "lr", "min_lr_ratio",
        "warmup_steps", "schedule", "wsd_decay_fraction", "weight_decay", "trainable", "val_fraction",
        "log_every", "seed", "groups", "upsample", "max_epochs", "source_max_epochs", "token_estimate",
        "on_shortfall", "pack_shuffle_buffer", "pack_workers", "pack_loss_mask", "token_budget",
        "checkpoint_every", "keep_last", "nproc_per_node",
    }  # fmt: skip
    # Every blend field is placed by the same rule, including those added later (quality_weighting).
    assert old_keys | {"quality_weighting"} == set(FLAT_STAGE_KEYS)


def test_a_key_given_flat_and_in_its_section_fails_naming_both(tmp_path):
    raw = _raw()
    raw["stages"][0]["warmup_steps"] = 3
    with pytest.raises(RecipeError, match=r"stages\.0\.warmup_steps and stages\.0\.train\.warmup_steps"):
        parse_recipe(raw, BUNDLED_DIR)


def test_the_sectioned_bundled_recipes_load_without_deprecations(recwarn):
    for name in ("demo", "vi", "ja"):
        load_recipe(name)
    assert not [w for w in recwarn if issubclass(w.category, RecipeDeprecationWarning)]
