"""A blend with a license outside the recipe's allowlist fails a blocking check; nothing trains on it.

A source declaring such a license already fails at load (test_recipe_errors.py); the blend's check stops
one that reaches the documents anyway (a license manifest edited after the code location loaded), here
a recipe changed after validation."""

from __future__ import annotations

import dagster as dg
import yaml

from lm_platform.defs.assets import build_assets
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe import load_recipe
from lm_platform.recipe.loader import BUNDLED_DIR


def _recipe(tmp_path, en_web_license: str):
    raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text(encoding="utf-8"))
    for src in raw["sources"]:
        src["location"] = str(BUNDLED_DIR / src["location"])
    raw["evaluations"] = []
    for stage in raw["stages"]:  # the demo's mixture search scores on an evaluation removed above
        stage.pop("mixture_search", None)
    for section in ("finetune", "merges", "exports"):  # fine-tuning builds on stages not kept here
        raw.pop(section, None)
    path = tmp_path / f"recipe_{en_web_license}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    recipe = load_recipe(str(path))
    sources = tuple(
        s.model_copy(update={"license": en_web_license}) if s.name == "en_web" else s for s in recipe.sources
    )
    return recipe.model_copy(update={"sources": sources})  # unvalidated: past the load-time check


def _run(tmp_path, recipe):
    # The blend and everything it needs (tokenizer, tokens/*), and the packed dataset after it.
    selection = dg.AssetSelection.assets(dg.AssetKey(["dataset", "main"])).upstream()
    return dg.materialize(
        build_assets(recipe),
        resources={"storage": LMStorage(root=str(tmp_path / "data")), "trainer": dg.PipesSubprocessClient()},
        selection=selection,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_disallowed_license_fails_the_blocking_check_and_stops_downstream(tmp_path):
    result = _run(tmp_path, _recipe(tmp_path, "CC-BY-NC-4.0"))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["licenses_allowed"].passed is False
    disallowed = checks["licenses_allowed"].metadata["disallowed"].value
    assert [row["license"] for row in disallowed] == ["CC-BY-NC-4.0"]
    assert "blend/main" in _materialized(result)
    assert "dataset/main" not in _materialized(result)
    assert not (tmp_path / "data" / "demo" / "dataset" / "main").exists()


def test_allowed_licenses_pass_and_downstream_runs(tmp_path):
    result = _run(tmp_path, _recipe(tmp_path, "CC-BY-4.0"))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["licenses_allowed"].passed is True
    assert {"blend/main", "tokenizer", "dataset/main"} <= _materialized(result)
