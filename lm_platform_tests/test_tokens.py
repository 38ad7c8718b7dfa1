"""Tokenize once per source, blend by exact token counts, pack from the token shards."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from lm_platform.data.blending.blend import DOCLIST_FILE, MANIFEST_FILE, BlendShortfall, blend_tokens
from lm_platform.data.blending.pack import INDEX_FILE, is_val, load_split, load_split_mask, pack_tokens
from lm_platform.data.blending.tokens import DOCS_FILE, tokenize_source
from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.demo.generate import read_paragraphs
from lm_platform.recipe.schema import TokenizerConfig
from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

TEXTS = {lang: read_paragraphs(lang) for lang in ("vi", "ja", "en")}
LICENSES = {"vi": "CC-BY-4.0", "ja": "CC-BY-SA-4.0", "en": "CC0-1.0"}


def _files(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_sentencepiece((t for ts in TEXTS.values() for t in ts), out, TokenizerConfig(vocab_size=2000))
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """One deduplicated file per language (documents of one to three paragraphs), small row groups."""
    base = tmp_path_factory.mktemp("deduped")
    out = {}
    for lang, paras in TEXTS.items():
        path = base / f"{lang}.parquet"
        docs = [
            make_doc(
                f"{lang}/{i}", "\n\n".join(paras[i : i + 1 + i % 3]), f"{lang}_src", LICENSES[lang], lang
            )
            for i in range(len(paras))
        ]
        with DocWriter(path, batch_size=20) as w:
            w.write_all(docs)
        out[f"{lang}_src"] = (path, docs)
    return out


@pytest.fixture(scope="module")
def tokens(sources, tokenizer_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("tokens")
    return {
        s: (tokenize_source(path, tokenizer_dir, base / s, source=s, part_rows=40), base / s)
        for s, (path, _) in sources.items()
    }


def test_tokens_hold_every_document_once_with_exact_counts(sources, tokens, tokenizer_dir):
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    for s, (summary, d) in tokens.items():
        docs = sources[s][1]
        table = pq.read_table(d / DOCS_FILE).to_pylist()
        assert [r["id"] for r in table] == [doc["id"] for doc in docs]
        assert summary["parts"] > 1  # several token shards, offsets restart per part
        for row, doc in zip(table, docs, strict=True):
            ids = np.load(d / f"tokens_{row['part']:05d}.npy", mmap_mode="r")
            got = ids[row["offset"] : row["offset"] + row["tokens"]].tolist()
            assert got == tok.encode(doc["text"], add_special_tokens=False).ids
            assert row["license"] == doc["license"] and row["lang"] == doc["lang"]
        total = sum(len(tok.encode(doc["text"], add_special_tokens=False).ids) for doc in docs)
        assert summary["tokens"] == total and summary["docs"] == len(docs)
        assert summary["licenses"] == {
            docs[0]["license"]: {
                "docs": len(docs),
                "tokens": total,
                "chars": sum(len(x["text"]) for x in docs),
            }
        }


def test_tokens_do_not_depend_on_the_number_of_workers(sources, tokens, tokenizer_dir, tmp_path):
    s = "vi_src"
    tokenize_source(sources[s][0], tokenizer_dir, tmp_path / "w2", source=s, part_rows=40, workers=2)
    assert _files(tmp_path / "w2") == _files(tokens[s][1])


def _blend(tokens, out, target, **kw):
    dirs = {s: d for s, (_, d) in tokens.items()}
    ratios = kw.pop("ratios", {"vi_src": 0.5, "ja_src": 0.3, "en_src": 0.2})
    return blend_tokens(dirs, ratios, target, out, **kw)


def test_blend_meets_each_source_target_within_one_document_and_pack_counts_agree(
    tokens, tokenizer_dir, tmp_path
):
    total = sum(summary["tokens"] + 2 * summary["docs"] for summary, _ in tokens.values())
    target = total // 3
    manifest = _blend(tokens, tmp_path / "blend", target, seed="13:main", boundary_tokens=2)
    index = pack_tokens(
        tmp_path / "blend",
        {s: d for s, (_, d) in tokens.items()},
        tokenizer_dir,
        tmp_path / "ds",
        64,
        0.1,
        seed=3,
    )
    assert manifest["shortfall"]["tokens"] == 0
    assert sum(r["target_tokens"] for r in manifest["sources"]) == target
    for r in manifest["sources"]:
        assert abs(r["taken_tokens"] - r["target_tokens"]) <= r["max_doc_tokens"]
        # Packed tokens with BOS/EOS, as index.json counts them, are what the blend counted.
        assert index["sources"][r["source"]] == {"docs": r["taken_docs"], "tokens": r["taken_tokens"]}
    assert index["tokens"] == manifest["taken_tokens"]
    assert sum(r["tokens"] for r in manifest["licenses"]) == manifest["taken_tokens"]
    assert {r["license"] for r in manifest["licenses"]} == set(LICENSES.values())


def test_blend_and_pack_are_byte_identical_when_repeated(tokens, tokenizer_dir, tmp_path):
    dirs = {s: d for s, (_, d) in tokens.items()}
    for run in ("a", "b"):
        _blend(tokens, tmp_path / run / "blend", 20_000, seed="13:main")
        pack_tokens(tmp_path / run / "blend", dirs, tokenizer_dir, tmp_path / run / "ds", 64, 0.1, seed=3)
    assert _files(tmp_path / "a" / "blend") == _files(tmp_path / "b" / "blend")
    assert _files(tmp_path / "a" / "ds") == _files(tmp_path / "b" / "ds")
    _blend(tokens, tmp_path / "c" / "blend", 20_000, seed="13:anneal")
    assert _files(tmp_path / "c" / "blend")[DOCLIST_FILE] != _files(tmp_path / "a" / "blend")[DOCLIST_FILE]


def test_packed_documents_match_the_tokenizer_and_split_by_id(sources, tokens, tokenizer_dir, tmp_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    _blend(tokens, tmp_path / "blend", 10**9)  # everything (shortfall recorded)
    index = pack_tokens(
        tmp_path / "blend",
        {s: d for s, (_, d) in tokens.items()},
        tokenizer_dir,
        tmp_path / "ds",
        64,
        0.2,
        seed=1,
    )
    all_docs = [d for _, docs in sources.values() for d in docs]
    for split in ("train", "val"):
        flat = load_split(tmp_path / "ds", split).reshape(-1)[: index["splits"][split]["tokens"]].tolist()
        got, start = [], 0
        for i, t in enumerate(flat):
            if t == index["eos_id"]:
                assert flat[start] == index["bos_id"]
                got.append(tuple(flat[start + 1 : i]))
                start = i + 1
        want = [
            tuple(tok.encode(d["text"], add_special_tokens=False).ids)
            for d in all_docs
            if is_val(d["id"], 0.2) == (split == "val")
        ]
        assert sorted(got) == sorted(want) and got != want  # every document once, shuffled


def test_one_boundary_token_where_bos_is_eos(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0} | {f"w{i}": i + 1 for i in range(50)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = "<|endoftext|>"
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=special, eos_token=special, unk_token=special
    ).save_pretrained(str(tmp_path / "tok"))
    with DocWriter(tmp_path / "d.parquet") as w:
        w.write_all(
            make_doc(f"d/{i}", " ".join(f"w{j + 1}" for j in range(i + 2)), "s", "CC0-1.0", "en")
            for i in range(6)
        )
    tokenize_source(tmp_path / "d.parquet", tmp_path / "tok", tmp_path / "tokens", source="s")
    m = blend_tokens({"s": tmp_path / "tokens"}, {"s": 1.0}, 10**6, tmp_path / "blend", boundary_tokens=1)
    index = pack_tokens(
        tmp_path / "blend",
        {"s": tmp_path / "tokens"},
        tmp_path / "tok",
        tmp_path / "ds",
        8,
        0.0,
        shuffle_buffer=0,
    )
    flat = load_split(tmp_path / "ds", "train").reshape(-1)[: index["tokens"]].tolist()
    assert index["boundary_tokens"] == 1 and index["tokens"] == m["taken_tokens"] == sum(
        i + 3 for i in range(6)
    )
    # w1 w2 <|endoftext|> w1 w2 w3 w4 <|endoftext|> ...: each document followed by the one token
    assert flat.count(0) == 6 and flat[-1] == 0 and flat[0] != 0
    assert all(not (a == b == 0) for a, b in zip(flat, flat[1:], strict=False))


def test_upsampling_repeats_whole_passes_up_to_the_cap(tokens, tmp_path):
    import pyarrow.parquet as pq

    vi_summary, vi_dir = tokens["vi_src"]
    avail = vi_summary["tokens"] + 2 * vi_summary["docs"]
    m = blend_tokens(
        {"vi_src": vi_dir}, {"vi_src": 1.0}, int(avail * 2.4), tmp_path / "b", epoch_caps={"vi_src": 3}
    )
    row = m["sources"][0]
    assert abs(row["taken_tokens"] - int(avail * 2.4)) <= row["max_doc_tokens"]
    passes = pq.read_table(tmp_path / "b" / DOCLIST_FILE).column("pass").to_pylist()
    assert (
        passes.count(0) == passes.count(1) == vi_summary["docs"] and 0 < passes.count(2) < vi_summary["docs"]
    )
    short = blend_tokens(
        {"vi_src": vi_dir}, {"vi_src": 1.0}, avail * 5, tmp_path / "s", epoch_caps={"vi_src": 3}
    )
    assert short["shortfall"]["tokens"] == avail * 5 - 3 * avail and short["taken_tokens"] == 3 * avail
    with pytest.raises(BlendShortfall, match="vi_src"):
        blend_tokens({"vi_src": vi_dir}, {"vi_src": 1.0}, avail * 5, tmp_path / "e", on_shortfall="error")
    assert not (tmp_path / "e").exists()


def test_overflow_goes_to_the_other_sources_and_groups_split_by_tokens(tokens, tmp_path):
    en_summary, _ = tokens["en_src"]
    en_avail = en_summary["tokens"] + 2 * en_summary["docs"]
    target = en_avail * 2  # en asked for 60%: it gives all it has, the rest goes to vi and ja
    m = _blend(
        tokens,
        tmp_path / "b",
        target,
        ratios={"en_src": 0.6, "asia": 0.4},
        groups={"asia": ("vi_src", "ja_src")},
    )
    rows = {r["source"]: r for r in m["sources"]}
    assert rows["en_src"]["taken_tokens"] == en_avail and rows["en_src"]["exhausted"]
    assert m["shortfall"]["tokens"] == 0
    assert rows["vi_src"]["group"] == "asia" and sum(r["target_tokens"] for r in rows.values()) == target
    for r in rows.values():
        assert abs(r["taken_tokens"] - r["target_tokens"]) <= r["max_doc_tokens"]


def test_loss_masks_come_from_the_token_shards(tokenizer_dir, tmp_path):
    import pyarrow.parquet as pq
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
    plain = make_doc("p/1", TEXTS["en"][0], "sft", "CC0-1.0", "en")
    with DocWriter(tmp_path / "d.parquet") as w:
        w.write_all([chat, plain])
    tokenize_source(tmp_path / "d.parquet", tokenizer_dir, tmp_path / "tokens", source="sft")
    blend_tokens({"sft": tmp_path / "tokens"}, {"sft": 1.0}, 10**6, tmp_path / "blend")
    index = pack_tokens(
        tmp_path / "blend",
        {"sft": tmp_path / "tokens"},
        tokenizer_dir,
        tmp_path / "ds",
        32,
        0.0,
        shuffle_buffer=0,
        loss_mask=True,
    )
    rows, mask = load_split(tmp_path / "ds", "train"), load_split_mask(tmp_path / "ds", "train")
    flat, fmask = rows.reshape(-1), mask.reshape(-1)
    n_chat = len(tok.encode(chat["text"], add_special_tokens=False)) + 2
    n_plain = index["tokens"] - n_chat
    chat_first = pq.read_table(tmp_path / "blend" / DOCLIST_FILE).column("doc").to_pylist()[0] == 0
    a = 0 if chat_first else n_plain
    trained = tok.decode(flat[a : a + n_chat][fmask[a : a + n_chat] == 1].tolist(), skip_special_tokens=True)
    assert trained.strip() == answer.strip() and fmask[a] == 0 and fmask[a + n_chat - 1] == 1
    b = n_chat if chat_first else 0
    assert fmask[b : b + n_plain].all() and not fmask[index["tokens"] :].any()


def test_packing_refuses_tokens_from_another_tokenizer(tokens, tmp_path):
    _blend(tokens, tmp_path / "blend", 5000)
    other = tmp_path / "tok2"
    train_sentencepiece((t for t in TEXTS["en"]), other, TokenizerConfig(vocab_size=800))
    with pytest.raises(ValueError, match="another tokenizer"):
        pack_tokens(tmp_path / "blend", {s: d for s, (_, d) in tokens.items()}, other, tmp_path / "ds", 64)
    assert (tmp_path / "blend" / MANIFEST_FILE).exists() and not (tmp_path / "ds" / INDEX_FILE).exists()


def test_sentencepiece_training_is_deterministic_with_its_seed(tmp_path):
    texts = [t for ts in TEXTS.values() for t in ts]
    sentences = sum(1 for t in texts for line in t.split("\n") if line.strip())
    cfg = TokenizerConfig(vocab_size=2000, max_sentences=sentences // 2, seed=7)  # sampled: the seed matters
    for run in ("a", "b"):
        train_sentencepiece(iter(texts), tmp_path / run, cfg)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    train_sentencepiece(iter(texts), tmp_path / "c", cfg.model_copy(update={"seed": 8}))
    assert _files(tmp_path / "c")["tokenizer.model"] != _files(tmp_path / "a")["tokenizer.model"]
