"""EEVE vocabulary extension of a byte-level BPE base (SmolLM2-style), fertility before/after, and
extend mode through the `tokenizer` asset.

The base is a small byte-level BPE tokenizer trained here on the English demo text (by the function that
also builds the demo's base tokenizer) and saved as an HF directory, loaded with
`AutoTokenizer.from_pretrained(path)` exactly as a hub id would be.
"""

from __future__ import annotations

import json

import pytest

from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.demo.generate import read_paragraphs
from lm_platform.tokenization.byte_level import train_byte_level_bpe
from lm_platform.tokenization.eeve import EEVE_FILE, extend_tokenizer, token_bytes, token_is_valid
from lm_platform.tokenization.fertility import compare_fertility, worse_than_base

EN = read_paragraphs("en")
VI = read_paragraphs("vi")
JA = read_paragraphs("ja")
VI_TRAIN, VI_HELD = VI[:-20], VI[-20:]
BASE_VOCAB = 1024
TRICKY = ["  leading and  double  spaces ", "tabs\tand\nnewlines\n\n", "emoji 🙂 and ñ", "Đà Nẵng 2024!"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "smol_like"
    train_byte_level_bpe(EN, out, BASE_VOCAB)
    return out


@pytest.fixture(scope="module")
def extended(base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ext") / "tokenizer"
    res = extend_tokenizer(
        str(base_dir), lambda: iter(VI_TRAIN), out, "vi", BASE_VOCAB + 768, multiple=128, min_frequency=3
    )
    return out, res


def _load(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def test_new_tokens_follow_the_eeve_contract(base_dir, extended):
    out, res = extended
    base, ext = _load(base_dir), _load(out)
    record = json.loads((out / EEVE_FILE).read_text(encoding="utf-8"))
    assert record["base"] == str(base_dir) and record["base_vocab_size"] == len(base) == BASE_VOCAB
    new = record["new_tokens"]
    assert len(new) > 0 and len(new) % 128 == 0 and len(ext) == len(base) + len(new) == res.vocab_size
    assert [t["id"] for t in new] == list(range(len(base), len(base) + len(new)))
    ext_vocab, base_vocab = ext.get_vocab(), base.get_vocab()
    assert all(ext_vocab[tok] == i for tok, i in base_vocab.items())  # base ids unchanged
    for t in new:
        assert ext_vocab[t["token"]] == t["id"] and t["token"] not in base_vocab
        assert "".join(base.convert_ids_to_tokens(t["pieces"])) == t["token"]
        assert len(t["pieces"]) >= 2 and max(t["pieces"]) < len(base)
        assert token_is_valid(token_bytes(t["token"], byte_level=True), "vi")


def test_extended_tokenizer_encodes_english_exactly_like_the_base(base_dir, extended):
    base, ext = _load(base_dir), _load(extended[0])
    texts = EN + ["Plain ASCII with digits 12345, symbols #$%& and  spaces.", "tabs\tand\nnewlines\n\n"]
    assert all(t.isascii() for t in texts)
    for text in texts:
        assert ext.encode(text, add_special_tokens=False) == base.encode(text, add_special_tokens=False)


def test_extended_tokenizer_uses_new_tokens_and_lowers_vietnamese_fertility(base_dir, extended):
    base, ext = _load(base_dir), _load(extended[0])
    new_ids = {t["id"] for t in extended[1].new_tokens}
    used = {i for text in VI_HELD for i in ext.encode(text, add_special_tokens=False)} & new_ids
    assert len(used) > 0.2 * len(new_ids)  # merges fire on normal text, not only as added tokens
    rows = {r["lang"]: r for r in compare_fertility(ext, base, [("vi", t) for t in VI_HELD])}
    vi = rows["vi"]
    assert vi["new_tokens_per_word"] < 0.75 * vi["base_tokens_per_word"]
    assert vi["change"] < -0.25 and worse_than_base(list(rows.values()), ["vi"]) == []
    print(f"vi tokens/word {vi['base_tokens_per_word']} -> {vi['new_tokens_per_word']} ({vi['change']:+.1%})")


def test_fertility_rows_read_as_one_line_per_language(base_dir, extended):
    from lm_platform.tokenization.fertility import describe, reduction_key

    base, ext = _load(base_dir), _load(extended[0])
    docs = [("vi", t) for t in VI_HELD] + [("ja", t) for t in JA[:5]] + [("en", t) for t in EN[:5]]
    rows = {r["lang"]: r for r in compare_fertility(ext, base, docs)}
    vi = rows["vi"]
    assert describe(vi) == (
        f"vi tokens/word {vi['base_tokens_per_word']:.2f} -> {vi['new_tokens_per_word']:.2f} "
        f"({round(100 * vi['change'])}%)"
    )
    assert describe(rows["ja"]).startswith("ja tokens/char ") and describe(rows["ja"]).endswith("(+0%)")
    assert [reduction_key(rows[k]) for k in ("vi", "ja")] == [
        "vi_tokens_per_word_reduction",
        "ja_tokens_per_char_reduction",
    ]
    alone = compare_fertility(ext, None, [("en", EN[0])])[0]  # no base: just the cost
    assert describe(alone) == f"en tokens/word {alone['new_tokens_per_word']:.2f}"


def test_worse_tokenizer_fails_the_fertility_comparison(base_dir, extended):
    base, ext = _load(base_dir), _load(extended[0])
    # Swap roles: the base judged against the extended tokenizer is worse on Vietnamese.
    rows = compare_fertility(base, ext, [("vi", t) for t in VI_HELD] + [("en", t) for t in EN[:5]])
    assert worse_than_base(rows, ["vi"]) == ["vi"]
    assert worse_than_base(rows, ["en"]) == []  # identical on English


def test_extended_tokenizer_round_trips_the_demo_text(extended):
    ext = _load(extended[0])
    for text in VI + EN + JA + TRICKY:
        assert ext.decode(ext.encode(text, add_special_tokens=False)) == text


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (" việt", True),
        ("ường", True),
        ("đ", True),
        ("Vie\u0302\u0323t", True),  # NFD
        ("vi", False),  # ASCII only: English text could form it
        ("«»", False),  # symbols only
        ("日本", False),  # not Vietnamese
        ("Straße", False),  # German letters are not Vietnamese ones
    ],
)
def test_vietnamese_validity_rule(text, ok):
    assert token_is_valid(text.encode("utf-8"), "vi") is ok


def test_no_token_with_a_partial_character():
    assert not token_is_valid("ệ".encode()[:2], "vi")  # first bytes of a Vietnamese letter
    assert not token_is_valid("ệ".encode()[1:], "vi")  # starts mid-character
    assert not token_is_valid(" ệ".encode()[:3], "vi")


def test_vocab_size_is_reached_exactly(base_dir, tmp_path):
    res = extend_tokenizer(
        str(base_dir), lambda: iter(VI_TRAIN), tmp_path / "t", "vi", BASE_VOCAB + 256, 128, min_frequency=3
    )
    assert res.vocab_size == BASE_VOCAB + 256 and len(res.new_tokens) == 256
    assert res.invariant is not None and res.invariant["passed"]


def test_too_few_candidates_is_a_clear_error_naming_how_many_existed(base_dir, tmp_path):
    with pytest.raises(ValueError, match=r"offers only \d+ valid new vi tokens"):
        extend_tokenizer(str(base_dir), lambda: iter(VI_TRAIN[:2]), tmp_path / "t", "vi", BASE_VOCAB + 4096)
    with pytest.raises(ValueError, match="multiple of tokenizer.extend_multiple"):
        extend_tokenizer(str(base_dir), lambda: iter(VI_TRAIN), tmp_path / "t", "vi", BASE_VOCAB + 100)
    assert not (tmp_path / "t").exists()


def test_extend_mode_through_the_tokenizer_asset(base_dir, tmp_path):
    import dagster as dg

    from lm_platform.defs.resources import LMStorage
    from lm_platform.defs.tokenizer import tokenizer_asset
    from lm_platform.recipe import load_recipe
    from lm_platform.recipe.loader import parse_recipe

    demo = load_recipe("demo").model_dump(mode="json")
    demo["tokenizer"] = {
        "mode": "extend",
        "base": str(base_dir),
        "language": "vi",
        "vocab_size": BASE_VOCAB + 1024,
        "extend_multiple": 128,
        "extend_min_frequency": 3,
    }
    recipe = parse_recipe(demo, base_dir=tmp_path)
    storage = LMStorage(root=str(tmp_path / "data"))
    layout = storage.layout(recipe.name)
    layout.deduped("vi_news").parent.mkdir(parents=True)
    # 'extend' samples the target language's deduplicated sources (vi_news), never the English one.
    with DocWriter(layout.deduped("vi_news")) as w:
        w.write_all(make_doc(f"vi/{i}", t, "vi_news", "CC0-1.0", "vi") for i, t in enumerate(VI))
    result = dg.materialize([tokenizer_asset(recipe)], resources={"storage": storage})
    assert result.success
    mat = result.asset_materializations_for_node("tokenizer")[0]
    assert mat.metadata["base_vocab_size"].value == BASE_VOCAB
    assert mat.metadata["vocab_size"].value == BASE_VOCAB + mat.metadata["new_tokens"].value
    assert "base_tokens_per_word" in mat.metadata["fertility"].value
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"fertility_not_worse_than_base", "other_languages_unchanged"}
    assert all(c.passed for c in checks.values())
    assert checks["other_languages_unchanged"].metadata["checked"].value >= 9 * 20
    assert (storage.layout(recipe.name).tokenizer() / EEVE_FILE).exists()
    assert list(mat.metadata["training_sample"].value) == ["vi_news"]
