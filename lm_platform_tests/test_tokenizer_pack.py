"""SentencePiece training with HF export, fertility, and packing into token shards."""

from __future__ import annotations

import numpy as np
import pytest
import sentencepiece as spm

from lm_platform.data.blending.pack import INDEX_FILE, is_val, load_split, token_dtype
from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.demo.generate import read_paragraphs
from lm_platform.recipe.loader import BUNDLED_DIR
from lm_platform.recipe.schema import TokenizerConfig
from lm_platform.tokenization.fertility import fertility
from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece
from lm_platform_tests.pack_fixtures import pack_text

TEXTS = {lang: read_paragraphs(lang) for lang in ("vi", "ja", "en")}
BUNDLED_BASE = BUNDLED_DIR / "demo_data" / "base_tokenizer"  # the demo's byte-level BPE base
TRICKY = [
    "  leading and  double  spaces ",
    "tabs\tand\nnewlines\n\n",
    "emoji 🙂 and ñ",
    "<|user|> hi <|user|>",
]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tokenizer_dir(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"tok_{request.param}") / "tokenizer"
    cfg = TokenizerConfig(model_type=request.param, vocab_size=3000, user_defined_symbols=("<|user|>",))
    summary = train_sentencepiece((t for ts in TEXTS.values() for t in ts), out, cfg)
    assert 2000 < summary["vocab_size"] <= 3000 and summary["added_tokens"] == ["<|user|>"]
    return out


def test_hf_export_round_trips_and_matches_sentencepiece(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
    for text in [t for ts in TEXTS.values() for t in ts] + TRICKY:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        if "<|user|>" not in text:
            assert ids == sp.encode(text), text
    assert tok("hello")["input_ids"][0] == tok.bos_token_id
    user = tok.convert_tokens_to_ids("<|user|>")
    assert tok.encode("<|user|>", add_special_tokens=False) == [user]


def test_fertility_reports_per_language(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    fert = fertility(tok, [(lang, t) for lang, ts in TEXTS.items() for t in ts[:5]])
    assert set(fert) == {"vi", "ja", "en"}
    assert fert["ja"]["tokens_per_word"] is None  # no spaces between Japanese words
    assert fert["en"]["tokens_per_word"] > 1 and fert["vi"]["chars_per_token"] > 1


def test_token_dtype_by_vocabulary_size():
    # The padding id is vocab_size itself, so 65,535 tokens is the most uint16 holds.
    assert token_dtype(2048) == np.uint16 and token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32 and token_dtype(151_000) == np.uint32


def test_val_split_is_by_document_id_and_stable():
    ids = [f"doc/{i}" for i in range(10_000)]
    share = sum(is_val(i, 0.1) for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert [is_val(i, 0.1) for i in ids[:50]] == [is_val(i, 0.1) for i in ids[:50]]


def test_pack_keeps_every_token_once_across_shards(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    docs = [make_doc(f"s/{i}", t, "s", "CC0-1.0", "en") for i, t in enumerate(TEXTS["en"][:60])]
    with DocWriter(tmp_path / "blend.parquet") as w:
        w.write_all(docs)
    index = pack_text(
        tmp_path / "blend.parquet",
        tokenizer_dir,
        tmp_path / "ds",
        seq_len=32,
        val_fraction=0.2,
        rows_per_shard=16,
    )
    assert (tmp_path / "ds" / INDEX_FILE).exists() and index["dtype"] == "uint16"
    assert len(index["splits"]["train"]["shards"]) > 1  # several shards, concatenated on read
    for split in ("train", "val"):
        expected = []
        for d in docs:
            if is_val(d["id"], 0.2) == (split == "val"):
                expected += [
                    tok.bos_token_id,
                    *tok.encode(d["text"], add_special_tokens=False),
                    tok.eos_token_id,
                ]
        rows = load_split(tmp_path / "ds", split)
        assert rows.shape[1] == 33
        flat = rows.reshape(-1).tolist()
        pad = index["splits"][split]["padding"]
        assert flat[: len(flat) - pad] == expected
        assert set(flat[len(flat) - pad :]) <= {len(tok)} and index["pad_id"] == len(tok)
    assert index["tokens"] == sum(index["sources"]["s"].values()) - index["sources"]["s"]["docs"]


def _same_tokenizer(a, b) -> None:
    assert type(a) is type(b)
    assert (len(a), a.bos_token_id, a.eos_token_id, a.pad_token_id) == (
        len(b),
        b.bos_token_id,
        b.eos_token_id,
        b.pad_token_id,
    )
    assert a.all_special_ids == b.all_special_ids and a.get_vocab() == b.get_vocab()
    assert a.init_kwargs == b.init_kwargs
    for text in [t for ts in TEXTS.values() for t in ts[:3]] + TRICKY:
        assert a(text)["input_ids"] == b(text)["input_ids"], text


def test_load_tokenizer_is_autotokenizer_without_torch(tokenizer_dir, tmp_path):
    """`hf_compat.load_tokenizer` gives what `AutoTokenizer` gives, for the tokenizers the platform writes
    (SentencePiece exports, the demo's byte-level base, an EEVE extension of it), and loads them without
    importing torch (the tokenizer and dataset assets' processes then start seconds sooner)."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from lm_platform.tokenization.eeve import extend_tokenizer
    from lm_platform.tokenization.hf_compat import load_tokenizer

    base = BUNDLED_BASE
    extended = tmp_path / "extended"
    extend_tokenizer(str(base), TEXTS["vi"], extended, "vi", 1024 + 128, min_frequency=2, check=False)
    dirs = [tokenizer_dir, base, extended]
    for d in dirs:
        _same_tokenizer(load_tokenizer(d), AutoTokenizer.from_pretrained(str(d)))
    code = (
        "import sys\nfrom lm_platform.tokenization.hf_compat import load_tokenizer\n"
        + "".join(f"load_tokenizer({str(d)!r})\n" for d in dirs)
        + "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_tokenizer_leaves_model_specific_classes_to_autotokenizer(tokenizer_dir, tmp_path):
    """A tokenizer whose config names another class (or a model directory with config.json) goes through
    `AutoTokenizer`, which may pick a class of its own."""
    import json
    import shutil

    from transformers import AutoTokenizer

    from lm_platform.tokenization.hf_compat import load_tokenizer

    model_dir = tmp_path / "model"
    shutil.copytree(tokenizer_dir, model_dir)
    (model_dir / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    _same_tokenizer(load_tokenizer(model_dir), AutoTokenizer.from_pretrained(str(model_dir)))
    gpt2 = tmp_path / "gpt2"
    shutil.copytree(BUNDLED_BASE, gpt2)
    cfg = json.loads((gpt2 / "tokenizer_config.json").read_text(encoding="utf-8"))
    (gpt2 / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "GPT2Tokenizer"}))
    loaded = load_tokenizer(gpt2)
    assert type(loaded).__name__ == "GPT2Tokenizer"
    _same_tokenizer(loaded, AutoTokenizer.from_pretrained(str(gpt2)))
