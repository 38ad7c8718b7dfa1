"""The seeded, size-capped sample of tokenizer training text (`tokenization.sample`)."""

from __future__ import annotations

import json

import pytest

from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.tokenization.sample import sample_documents, sample_texts


def _docs(prefix: str, n: int, size: int = 100) -> list[dict]:
    return [{"id": f"{prefix}/{i}", "text": f"{prefix} {i} " + "x" * size} for i in range(n)]


def test_sample_is_capped_seeded_and_independent_of_input_order():
    docs = _docs("a", 500)
    s = sample_documents({"a": docs}, max_chars=10_000, seed=1)
    assert 9_000 < s.chars <= 10_000 and len(s.texts) == s.sources["a"]["docs_taken"]
    assert s.sources["a"]["docs_seen"] == 500
    assert sample_documents({"a": list(reversed(docs))}, max_chars=10_000, seed=1).texts == s.texts
    assert sample_documents({"a": docs}, max_chars=10_000, seed=2).texts != s.texts
    assert (
        list(sample_texts({"a": docs}, max_docs=7, seed=1))
        == sample_documents({"a": docs}, max_docs=7, seed=1).texts
    )
    assert len(sample_documents({"a": docs}, max_docs=7).texts) == 7


def test_mixture_splits_the_cap_between_sources():
    s = sample_documents(
        {"big": _docs("big", 1000), "small": _docs("small", 1000), "unused": _docs("u", 10)},
        max_chars=20_000,
        mixture={"big": 3, "small": 1},
    )
    assert 14_000 < s.sources["big"]["chars_taken"] <= 15_000
    assert 4_000 < s.sources["small"]["chars_taken"] <= 5_000
    assert "unused" not in s.sources  # not in the mixture: not read


def test_reads_parquet_and_jsonl_document_files(tmp_path):
    with DocWriter(tmp_path / "a.parquet") as w:
        w.write_all(make_doc(f"p/{i}", f"parquet {i}", "p", "CC0-1.0", "en") for i in range(50))
    (tmp_path / "b.jsonl").write_text(
        "\n".join(json.dumps({"id": f"j/{i}", "text": f"jsonl {i}"}) for i in range(50))
    )
    s = sample_documents({"p": tmp_path / "a.parquet", "j": [tmp_path / "b.jsonl"]}, max_docs=100)
    assert sorted(s.texts) == sorted([f"parquet {i}" for i in range(50)] + [f"jsonl {i}" for i in range(50)])
    assert sample_documents(tmp_path, max_docs=100).sources["all"]["docs_seen"] == 100  # a directory


def test_bad_input_names_the_problem(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON document"):
        sample_documents({"s": tmp_path / "bad.jsonl"}, max_docs=5)
    with pytest.raises(ValueError, match="mixture names \\['nope'\\]"):
        sample_documents({"s": ["a"]}, max_docs=5, mixture={"nope": 1.0})
    with pytest.raises(ValueError, match="no such document file"):
        sample_documents({"s": tmp_path / "missing.parquet"}, max_docs=5)


def test_documents_outside_the_license_allowlist_never_enter_the_sample(tmp_path):
    """Per document: a source may mix licenses (manifests), and the tokenizer trains before any blend's
    license check, so the sample itself leaves out what the allowlist does not allow."""
    with DocWriter(tmp_path / "mixed.parquet") as w:
        w.write_all(
            make_doc(f"m/{i}", f"doc {i}", "m", "CC-BY-NC-4.0" if i % 3 == 0 else "CC0-1.0", "en")
            for i in range(30)
        )
    s = sample_documents({"m": tmp_path / "mixed.parquet"}, max_docs=100, licenses=["CC0-1.0"])
    assert sorted(s.texts) == sorted(f"doc {i}" for i in range(30) if i % 3)
    assert s.sources["m"]["docs_excluded_license"] == 10 and s.sources["m"]["docs_taken"] == 20
    assert len(sample_documents({"m": tmp_path / "mixed.parquet"}, max_docs=100).texts) == 30


def test_the_tokenizer_asset_samples_only_allowlisted_documents(tmp_path):
    from lm_platform.defs.tokenizer import _sample
    from lm_platform.paths import Layout
    from lm_platform.recipe import load_recipe

    recipe = load_recipe("demo")
    layout = Layout(tmp_path, recipe.name)
    allowed = recipe.license_allowlist[0]
    for src in recipe.tokenizer_sources():
        layout.deduped(src.name).parent.mkdir(parents=True, exist_ok=True)
        with DocWriter(layout.deduped(src.name)) as w:
            w.write_all(
                make_doc(f"{src.name}/{i}", f"{src.name} {i}", src.name, lic, src.language)
                for i, lic in enumerate([allowed, "LicenseRef-Not-Allowed"] * 5)
            )
    texts, stats = _sample(recipe, layout)
    assert sorted(texts()) == sorted(
        f"{s.name} {i}" for s in recipe.tokenizer_sources() for i in range(0, 10, 2)
    )
    assert all(v["docs_excluded_license"] == 5 for v in stats.values())
