"""Code versions follow the recipe slice an asset reads; data versions follow the bytes it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    from lm_platform.evaluation import versions
    from lm_platform.evaluation.versions import model_dir, score_version, weights_hash
    from lm_platform.paths import Layout

    layout = Layout(tmp_path, "r")
    for stage, payload in (("main", b"main-weights"), ("anneal", b"anneal-weights")):
        d = model_dir(layout, stage)
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(payload)
        (d / "config.json").write_text("{}")
    write_json(
        layout.eval_result("perplexity", "main"),
        {"score": 41.0, "metric": "perplexity", "weights": weights_hash(model_dir(layout, "main"))},
    )
    monkeypatch.setattr(
        versions, "run_evaluation", lambda ev, path, seed: {"score": 1.5, "metric": "bits_per_byte"}
    )
    ev = types.SimpleNamespace(name="perplexity")
    result, _, _ = score_version(ev, layout, "anneal", "main", seed=0, code_version="1")
    assert result["previous_score"] is None and result["delta"] is None
    score_version(ev, layout, "main", None, seed=0, code_version="1")
    result, _, _ = score_version(ev, layout, "anneal", "main", seed=0, code_version="2")
    assert result["previous_score"] == 1.5 and result["delta"] == 0.0


def test_the_leaderboard_and_its_plot_are_written_atomically(tmp_path, monkeypatch):
    from lm_platform.evaluation import leaderboard
    from lm_platform.paths import Layout

    layout = Layout(tmp_path, "r")
    rows = [{"version": "main", "tokens_seen": 10, "ppl": 2.0}]
    monkeypatch.setattr(leaderboard, "leaderboard_rows", lambda *a: rows)
    monkeypatch.setattr(leaderboard, "leaderboard_plot", lambda *a: b"first plot")
    board = leaderboard.write_leaderboard(layout, ["ppl"], ["main"])
    assert board.plot_file == layout.leaderboard_plot() and board.plot_file.read_bytes() == b"first plot"
    assert json.loads(layout.leaderboard().read_text()) == rows == board.rows

    # A write that dies half-way leaves the previous plot whole and nothing partial beside it.
    real = Path.write_bytes

    def dies_half_way(self, data):
        real(self, data[: len(data) // 2])
        raise OSError("no space left on device")

    monkeypatch.setattr(leaderboard, "leaderboard_plot", lambda *a: b"second plot")
    monkeypatch.setattr(Path, "write_bytes", dies_half_way)
    with pytest.raises(OSError, match="no space"):
        leaderboard.write_leaderboard(layout, ["ppl"], ["main"])
    monkeypatch.setattr(Path, "write_bytes", real)
    assert layout.leaderboard_plot().read_bytes() == b"first plot"
    assert sorted(p.name for p in layout.leaderboard().parent.iterdir()) == [
        "leaderboard.json",
        "leaderboard.png",
    ]

    # Without a plot (no matplotlib) the old one goes, so the plot never shows other rows than the JSON.
    monkeypatch.setattr(leaderboard, "leaderboard_plot", lambda *a: None)
    assert leaderboard.write_leaderboard(layout, ["ppl"], ["main"]).plot_file is None
    assert not layout.leaderboard_plot().exists()


def test_paths_under_eval_models_and_checkpoint_are_made_only_by_layout():
    """`paths.Layout` is the one place those paths are made: no module joins the folder names itself."""
    import re

    import lm_platform

    package = Path(lm_platform.__file__).parent
    made_here = re.compile(
        r'/ "(eval|models|checkpoint|adapter|merged|export)"|\.with_suffix\("\.job\.json"\)'
    )
    offenders = [
        f"{path.relative_to(package)}:{n}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "paths.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if made_here.search(line)
    ]
    assert offenders == [], "make these paths with paths.Layout"
    assert made_here.search('base / "eval" / name') and not hasattr(lm_platform.paths.Layout, "eval")
