"""Packing text the platform's way (token shards per source, a document list, `pack_tokens`): several
token parts, seeded shuffling, loss masks, exact counts, uint32 vocabularies."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from lm_platform.data.blending.pack import is_val, load_split, load_split_mask
from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.demo.generate import read_paragraphs
from lm_platform.recipe.schema import TokenizerConfig
from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece
from lm_platform_tests.pack_fixtures import pack_text

TEXTS = {lang: read_paragraphs(lang) for lang in ("vi", "ja", "en")}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_sentencepiece((t for ts in TEXTS.values() for t in ts), out, TokenizerConfig(vocab_size=2000))
    return out


@pytest.fixture(scope="module")
def blend(tmp_path_factory):
    """All demo paragraphs from three sources, in small row groups so that a source has several token parts."""
    path = tmp_path_factory.mktemp("blend") / "data.parquet"
    docs = [
        make_doc(f"{lang}/{i}", t, f"{lang}_src", "CC0-1.0", lang)
        for lang, ts in TEXTS.items()
        for i, t in enumerate(ts)
    ]
    with DocWriter(path, batch_size=50) as w:
        w.write_all(docs)
    return path, docs


def _docs_in(dataset, split, index):
    """The packed stream of a split cut back into documents (BOS ... EOS), padding checked and dropped."""
    body = []
    for shard in index["splits"][split]["shards"]:
        flat = np.load(dataset / shard["file"]).reshape(-1)
        pad = shard["padding"]
        assert (flat[len(flat) - pad :] == index["pad_id"]).all()
        body += flat[: len(flat) - pad].tolist()
    assert len(body) == index["splits"][split]["tokens"]
    assert sum(s["padding"] for s in index["splits"][split]["shards"]) == index["splits"][split]["padding"]
    ends = [i for i, t in enumerate(body) if t == index["eos_id"]]
    docs, start = [], 0
    for end in ends:
        assert body[start] == index["bos_id"]
        docs.append(tuple(body[start + 1 : end]))
        start = end + 1
    assert start == len(body)
    return docs


def _expected(tokenizer_dir, docs, split, val_fraction):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return [
        tuple(tok.encode(d["text"], add_special_tokens=False))
        for d in docs
        if is_val(d["id"], val_fraction) == (split == "val")
    ]


@pytest.mark.parametrize(("part_rows", "shuffle"), [(65_536, 0), (40, 0), (40, 64)])
def test_every_token_of_every_document_lands_exactly_once(tokenizer_dir, blend, tmp_path, part_rows, shuffle):
    path, docs = blend
    index = pack_text(
        path,
        tokenizer_dir,
        tmp_path / "ds",
        64,
        0.15,
        part_rows=part_rows,
        rows_per_shard=20,
        shuffle_buffer=shuffle,
    )
    assert index["dtype"] == "uint16"
    for split in ("train", "val"):
        got = _docs_in(tmp_path / "ds", split, index)
        want = _expected(tokenizer_dir, docs, split, 0.15)
        assert Counter(got) == Counter(want)  # each document once, every token of it
        if not shuffle:
            assert got == want  # order kept (the document list's order)
        assert sum(map(len, got)) + 2 * len(got) == index["splits"][split]["tokens"]
    files = sorted(p.name for p in (tmp_path / "ds").glob("*.npy"))
    names = [s["file"] for sp in ("train", "val") for s in index["splits"][sp]["shards"]]
    assert files == sorted(names) and len(index["splits"]["train"]["shards"]) > 1


def test_exact_token_counts_per_source_and_split(tokenizer_dir, blend, tmp_path):
    path, docs = blend
    index = pack_text(path, tokenizer_dir, tmp_path / "ds", 64, 0.15, part_rows=40)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for lang in TEXTS:
        mine = [d for d in docs if d["source"] == f"{lang}_src"]
        exact = sum(len(tok.encode(d["text"], add_special_tokens=False)) + 2 for d in mine)
        assert index["sources"][f"{lang}_src"] == {"docs": len(mine), "tokens": exact}
        per_split = sum(index["splits"][s]["sources"].get(f"{lang}_src", 0) for s in ("train", "val"))
        assert per_split == exact
    assert index["tokens"] == sum(v["tokens"] for v in index["sources"].values())


def test_shuffling_is_seeded(tokenizer_dir, blend, tmp_path):
    path, _ = blend
    runs = {}
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        pack_text(path, tokenizer_dir, tmp_path / name, 64, 0.0, shuffle_buffer=100, seed=seed)
        runs[name] = load_split(tmp_path / name, "train")
    plain = pack_text(path, tokenizer_dir, tmp_path / "plain", 64, 0.0)
    unshuffled = load_split(tmp_path / "plain", "train")
    assert np.array_equal(runs["a"], runs["b"])
    assert not np.array_equal(runs["a"], runs["c"]) and not np.array_equal(runs["a"], unshuffled)
    assert Counter(runs["c"].reshape(-1).tolist()) == Counter(unshuffled.reshape(-1).tolist())
    assert plain["splits"]["val"]["docs"] == 0


def test_loss_mask_trains_only_on_the_answer_spans(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    prompt, answer = "Question: what is pho?\n\n", "Answer: a Vietnamese noodle soup."
    chat = make_doc(
        "q/1",
        prompt + answer,
        "sft",
        "CC0-1.0",
        "en",
        meta={"loss_spans": [[len(prompt), len(prompt + answer)]]},
    )
    plain = make_doc("p/1", TEXTS["en"][0], "web", "CC0-1.0", "en")
    with DocWriter(tmp_path / "b.parquet") as w:
        w.write_all([chat, plain])
    index = pack_text(tmp_path / "b.parquet", tokenizer_dir, tmp_path / "ds", 32, 0.0, loss_mask=True)
    assert index["loss_mask"] is True
    rows, mask = load_split(tmp_path / "ds", "train"), load_split_mask(tmp_path / "ds", "train")
    assert mask.shape == rows.shape and mask.dtype == np.uint8
    flat, fmask = rows.reshape(-1), mask.reshape(-1)
    n_chat = len(tok.encode(chat["text"], add_special_tokens=False)) + 2
    trained = tok.decode(flat[:n_chat][fmask[:n_chat] == 1].tolist(), skip_special_tokens=True)
    assert trained.strip() == answer.strip()  # prompt tokens masked out, answer and EOS kept
    assert fmask[n_chat - 1] == 1 and fmask[0] == 0
    n_plain = index["tokens"] - n_chat
    assert fmask[n_chat : n_chat + n_plain].all()  # ordinary text: every token trained
    assert not fmask[index["tokens"] :].any()  # padding never trained


def test_bad_loss_spans_name_the_document(tokenizer_dir, tmp_path):
    doc = make_doc("bad/7", "some text", "sft", "CC0-1.0", "en", meta={"loss_spans": ["oops"]})
    with DocWriter(tmp_path / "b.parquet") as w:
        w.write(doc)
    with pytest.raises(ValueError, match="bad/7"):
        pack_text(tmp_path / "b.parquet", tokenizer_dir, tmp_path / "ds", 32, 0.0, loss_mask=True)
    assert not (tmp_path / "ds").exists()


def test_large_vocabulary_packs_as_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, "<unk>": 3} | {f"w{i}": i + 4 for i in range(70_000)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    ).save_pretrained(str(tmp_path / "tok"))
    with DocWriter(tmp_path / "b.parquet") as w:
        w.write(make_doc("d/0", "w69999 w5 w65600", "s", "CC0-1.0", "en"))
    index = pack_text(tmp_path / "b.parquet", tmp_path / "tok", tmp_path / "ds", 8, 0.0)
    rows = load_split(tmp_path / "ds", "train")
    assert index["dtype"] == "uint32" and rows.dtype == np.uint32
    assert rows.reshape(-1)[:5].tolist() == [0, 70003, 9, 65604, 1]
    assert json.loads((tmp_path / "ds" / "index.json").read_text())["vocab_size"] == 70_004


def test_texts_with_added_token_strings_pack_as_the_hf_tokenizer_encodes_them(tmp_path):
    from transformers import AutoTokenizer

    tok_dir = tmp_path / "tok"
    cfg = TokenizerConfig(vocab_size=2000, user_defined_symbols=("<|user|>", "<|assistant|>"))
    train_sentencepiece((t for ts in TEXTS.values() for t in ts), tok_dir, cfg)
    texts = [
        *TEXTS["vi"][:30],
        "<|user|> xin chào <|assistant|> chào bạn",
        "a literal <s> and </s> inside",
        "🙂 ñ",
    ]
    with DocWriter(tmp_path / "b.parquet") as w:
        w.write_all(make_doc(f"d/{i}", t, "s", "CC0-1.0", "vi") for i, t in enumerate(texts))
    index = pack_text(tmp_path / "b.parquet", tok_dir, tmp_path / "ds", 32, 0.0)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    want = [
        i
        for t in texts
        for i in (tok.bos_token_id, *tok.encode(t, add_special_tokens=False), tok.eos_token_id)
    ]
    flat = load_split(tmp_path / "ds", "train").reshape(-1).tolist()
    assert flat[: index["tokens"]] == want  # ("</s>" in text is the EOS token to the HF tokenizer too)


def test_eos_stays_trainable_when_the_tokenizer_pads_with_eos(tmp_path):
    """SmolLM2's and Llama 3's tokenizers have no pad token of their own (or reuse EOS): packing pads with
    an id no token has, so training ignores the padding and nothing else; the model's config gets no pad
    token (an embedding's padding row never learns)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lm_platform.modeling.init import build_model
    from lm_platform.training.train import batch_tensors

    vocab = {"<|endoftext|>": 0} | {f"w{i}": i + 1 for i in range(50)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = "<|endoftext|>"
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=special, eos_token=special, pad_token=special, unk_token=special
    ).save_pretrained(str(tmp_path / "tok"))
    with DocWriter(tmp_path / "b.parquet") as w:
        w.write_all(
            make_doc(f"d/{i}", " ".join(f"w{j}" for j in range(i + 3)), "s", "CC0-1.0", "en")
            for i in range(5)
        )
    index = pack_text(tmp_path / "b.parquet", tmp_path / "tok", tmp_path / "ds", 8, 0.0)
    assert index["pad_id"] == 51 and index["model_pad_id"] is None and index["splits"]["train"]["padding"] > 0
    rows = load_split(tmp_path / "ds", "train")
    inputs, labels = batch_tensors(np.asarray(rows), index["pad_id"])
    # Every document's EOS (id 0) is a label the loss sees; only the padding at the end is ignored.
    assert int((labels == 0).sum()) == int((np.asarray(rows)[:, 1:] == 0).sum()) > 0
    assert int((labels == -100).sum()) == index["splits"]["train"]["padding"]
    assert int(inputs.max()) < 51
    model_cfg = {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                 "max_position_embeddings": 16, "rope_theta": 10000.0, "tie_word_embeddings": False}  # fmt: skip
    model = build_model(
        {"kind": "scratch", "model": model_cfg}, index["vocab_size"], 0, 0, index["model_pad_id"], 0
    )
    assert model.get_input_embeddings().padding_idx is None
