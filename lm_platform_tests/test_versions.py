"""Code versions follow the recipe slice an asset reads; data versions follow the bytes it wrote."""

from __future__ import annotations

from lm_platform.recipe import load_recipe
from lm_platform.versions import code_version, content_version


def test_code_version_changes_with_its_slice_only():
    recipe = load_recipe("demo")
    vi, ja = recipe.languages["vi"], recipe.languages["ja"]
    before = code_version("1", vi), code_version("1", ja)
    filters = list(vi.filters)
    filters[1] = filters[1].model_copy(update={"min_chars": 201})
    edited = vi.model_copy(update={"filters": filters})
    assert code_version("1", edited) != before[0]
    assert code_version("1", ja) == before[1]
    assert code_version("2", vi) != before[0]
    assert code_version("1", {"b": 1, "a": [1, 2]}) == code_version("1", {"a": [1, 2], "b": 1})


def test_content_version_follows_the_bytes(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / "a.npy").write_bytes(b"abc")
    (d / "sub").mkdir()
    (d / "sub" / "b.json").write_text("{}")
    v = content_version(d)
    assert content_version(d) == v  # same bytes, same version
    (d / "a.npy").write_bytes(b"abd")
    assert content_version(d) != v
    (d / "a.npy").write_bytes(b"abc")
    assert content_version(d) == v
    (d / "sub" / "b.json").rename(d / "sub" / "c.json")
    assert content_version(d) != v  # names count too
    assert content_version(d, exclude=["c.json"]) == content_version(d, exclude=["c.json", "x"])


def test_a_score_of_another_metric_is_no_baseline(tmp_path, monkeypatch):
    """`main`'s stored perplexity evaluation predates bits per byte (its result says metric 'perplexity'):
    scoring `anneal` in bits per byte must not report the change of unit as a delta against it; once
    `main` is scored in the same metric, it is the baseline again."""
    import types

    from lm_platform.atomic import write_json
    from lm_platform.evaluation import sets
    from lm_platform.evaluation.versions import model_dir, result_path, score_version, weights_hash

    for stage, payload in (("main", b"main-weights"), ("anneal", b"anneal-weights")):
        d = model_dir(tmp_path, stage)
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(payload)
        (d / "config.json").write_text("{}")
    write_json(
        result_path(tmp_path, "perplexity", "main"),
        {"score": 41.0, "metric": "perplexity", "weights": weights_hash(model_dir(tmp_path, "main"))},
    )
    monkeypatch.setattr(
        sets, "run_evaluation", lambda ev, path, seed: {"score": 1.5, "metric": "bits_per_byte"}
    )
    ev = types.SimpleNamespace(name="perplexity")
    result, _, _ = score_version(ev, tmp_path, "anneal", "main", seed=0, code_version="1")
    assert result["previous_score"] is None and result["delta"] is None
    score_version(ev, tmp_path, "main", None, seed=0, code_version="1")
    result, _, _ = score_version(ev, tmp_path, "anneal", "main", seed=0, code_version="2")
    assert result["previous_score"] == 1.5 and result["delta"] == 0.0
