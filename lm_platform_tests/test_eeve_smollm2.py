"""EEVE extension of the real SmolLM2 tokenizer on real Vietnamese text, loading under transformers 4.57
and 5.x, the probe-set invariant, the training-text sample, and SentencePiece/HF agreement on real
Japanese text.

The tokenizer and the text are read from ../shared (beside the repository, or $LM_PLATFORM_SHARED; never
copied into it): the tests skip, saying so, where it is absent. The transformers 4.57 checks run in `.venv-tf4`, the second
virtual environment `make install` builds (built here with `make tf4` when missing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from lm_platform.tokenization.eeve import EEVE_FILE, extend_tokenizer, token_bytes, token_is_valid
from lm_platform.tokenization.language_chars import has_language_char
from lm_platform.tokenization.probe import PROBE_TEXTS, SHARED_LETTER_TEXTS, check_invariant

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LM_PLATFORM_SHARED") or REPO.parent / "shared")  # the env var: for worktrees
SMOLLM2 = SHARED / "fixtures" / "smollm2-tokenizer"
REALTEXT = SHARED / "realtext-dev"
BASE_VOCAB = 49152
NEW = 1024
TF4_PYTHON = REPO / ".venv-tf4" / "bin" / "python"

needs_smollm2 = pytest.mark.skipif(
    not (SMOLLM2 / "tokenizer.json").exists() or not (REALTEXT / "vi_wiki.jsonl").exists(),
    reason=f"the SmolLM2 tokenizer fixture or real Vietnamese text is absent ({SHARED} not found)",
)


def _docs(name: str) -> list[dict]:
    with (REALTEXT / name).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _held_out(doc_id: str) -> bool:
    return zlib.crc32(doc_id.encode()) % 10 == 0


@pytest.fixture(scope="module")
def vi_split():
    docs = _docs("vi_wiki.jsonl")
    train = [d["text"] for d in docs if not _held_out(d["id"])][:250]
    held = [d["text"] for d in docs if _held_out(d["id"])][:30]
    return train, held


@pytest.fixture(scope="module")
def extended(vi_split, tmp_path_factory):
    base = tmp_path_factory.mktemp("base") / "smollm2"
    base.mkdir()
    for f in SMOLLM2.iterdir():
        (base / f.name).write_bytes(f.read_bytes())
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    cfg = json.loads((base / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["chat_template"] = template
    (base / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    out = tmp_path_factory.mktemp("ext") / "tokenizer"
    res = extend_tokenizer(str(base), vi_split[0], out, "vi", BASE_VOCAB + NEW, multiple=128, min_frequency=5)
    return base, out, res


def _load(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@needs_smollm2
def test_vocabulary_reaches_exactly_the_size_asked(extended):
    base, out, res = extended
    tok = _load(out)
    assert res.vocab_size == len(tok) == BASE_VOCAB + NEW and len(res.new_tokens) == NEW
    cfg = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["vocab_size"] == BASE_VOCAB + NEW
    assert [t["id"] for t in res.new_tokens] == list(range(BASE_VOCAB, BASE_VOCAB + NEW))
    special = json.loads((out / "special_tokens_map.json").read_text(encoding="utf-8"))
    eos = special["eos_token"]
    assert (eos["content"] if isinstance(eos, dict) else eos) == "<|endoftext|>"
    assert "<|im_start|>" in special["additional_special_tokens"]
    chat = tok.apply_chat_template([{"role": "user", "content": "Xin chào"}], tokenize=False)
    assert chat == "<|im_start|>user\nXin chào<|im_end|>\n"
    record = json.loads((out / EEVE_FILE).read_text(encoding="utf-8"))
    base_tok = _load(base)
    for t in record["new_tokens"][:200]:
        assert "".join(base_tok.convert_ids_to_tokens(t["pieces"])) == t["token"]


@needs_smollm2
def test_too_little_text_fails_saying_how_many_candidates_existed(vi_split, tmp_path):
    with pytest.raises(ValueError, match=r"offers only \d+ valid new vi tokens .* fewer than the 7168"):
        extend_tokenizer(str(SMOLLM2), vi_split[0][:20], tmp_path / "t", "vi", BASE_VOCAB + 7168, 128, 5)
    with pytest.raises(ValueError, match="multiple of tokenizer.extend_multiple"):
        extend_tokenizer(str(SMOLLM2), vi_split[0][:20], tmp_path / "t", "vi", BASE_VOCAB + 1000, 128, 5)
    assert not (tmp_path / "t").exists()


@needs_smollm2
def test_text_without_a_vietnamese_letter_encodes_exactly_as_before(extended):
    base, out, res = extended
    assert res.invariant is not None and res.invariant["passed"], res.invariant
    assert res.invariant["checked"] == sum(len(v) for v in PROBE_TEXTS.values())
    b, e = _load(base), _load(out)
    for lang, texts in PROBE_TEXTS.items():
        assert len(texts) >= 20, lang
        for text in texts:
            assert not has_language_char(text, "vi"), (lang, text)
            assert e.encode(text, add_special_tokens=False) == b.encode(text, add_special_tokens=False)
    en = [d["text"] for d in _docs("en_books.jsonl")[:8]] + [d["text"] for d in _docs("en_web.jsonl")]
    en = [t for t in en if not has_language_char(t, "vi")]
    assert all(e.encode(t, add_special_tokens=False) == b.encode(t, add_special_tokens=False) for t in en)


@needs_smollm2
def test_the_check_reports_a_tokenizer_that_changes_other_languages(extended):
    base, out, _ = extended
    # The base judged against a tokenizer with a German token glued on: German text changes.
    from tokenizers import Tokenizer

    data = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["vocab"]["ĠStraÃŁe"] = BASE_VOCAB
    data["model"]["ignore_merges"] = True
    broken = Tokenizer.from_str(json.dumps(data))
    res = check_invariant(Tokenizer.from_file(str(base / "tokenizer.json")), broken, "vi")
    assert not res.passed and {c["lang"] for c in res.changed} == {"de"}


@needs_smollm2
def test_new_tokens_hold_whole_vietnamese_characters_only(extended):
    _, _, res = extended
    for t in res.new_tokens:
        raw = token_bytes(t["token"], byte_level=True)
        raw.decode("utf-8")  # no partial character at either end
        assert has_language_char(raw.decode("utf-8"), "vi") and token_is_valid(raw, "vi")
    assert not token_is_valid("ệ".encode()[:2], "vi") and not token_is_valid("ệ".encode()[1:], "vi")
    assert not token_is_valid(b"vi", "vi") and token_is_valid(" việt".encode(), "vi")
    assert token_is_valid("e\u0302\u0323".encode(), "vi")  # NFD ệ


@needs_smollm2
def test_frequent_words_become_single_tokens_although_base_merges_exist(extended):
    """` ở` is `Ġá`+`»`+`Ł` in the base (no valid pair reaches it: it is a whole-word token), `với`,
    ` thành`, ` những`, ` Việt` are chains of new merges that must fire after the base's."""
    _, out, _ = extended
    tok = _load(out)
    for word in [" ở", " với", " thành", " những", " Việt", " được", " của"]:
        assert len(tok.encode(word, add_special_tokens=False)) == 1, (word, tok.tokenize(word))


@needs_smollm2
def test_round_trip_and_lower_fertility_on_held_out_text(extended, vi_split):
    base, out, _ = extended
    b, e = _load(base), _load(out)
    texts = vi_split[1] + [t for ts in (*PROBE_TEXTS.values(), *SHARED_LETTER_TEXTS.values()) for t in ts]
    texts += ["Việt Nam\u0301 NFD: Vie\u0302\u0323t", "  hai  khoảng trắng\t", "emoji 🙂 đ"]
    for text in texts:
        assert e.decode(e.encode(text, add_special_tokens=False)) == text
    words = sum(len(t.split()) for t in vi_split[1])
    before = sum(len(b.encode(t, add_special_tokens=False)) for t in vi_split[1]) / words
    after = sum(len(e.encode(t, add_special_tokens=False)) for t in vi_split[1]) / words
    assert after < 0.6 * before


# --------------------------------------------------------------------------------------------------
# transformers 4.57


def _tf4_python() -> Path:
    if not TF4_PYTHON.exists():
        proc = subprocess.run(["make", "-C", str(REPO), "tf4"], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not TF4_PYTHON.exists():
            pytest.skip(f".venv-tf4 is absent and `make tf4` could not build it: {proc.stderr[-300:]}")
    return TF4_PYTHON


_TF4_SCRIPT = r"""
import json, sys
from transformers import AutoConfig, AutoTokenizer, __version__
assert __version__.startswith("4.57"), __version__
out = {}
for kind, path, texts in json.load(sys.stdin):
    if kind == "config":
        c = AutoConfig.from_pretrained(path)
        out[path] = {"rope_theta": c.rope_theta, "vocab_size": c.vocab_size}
    else:
        t = AutoTokenizer.from_pretrained(path)
        out[path] = {"len": len(t), "ids": [t.encode(x, add_special_tokens=False) for x in texts]}
print(json.dumps(out))
"""


def _under_tf4(items: list) -> dict:
    proc = subprocess.run(
        [str(_tf4_python()), "-c", _TF4_SCRIPT],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_smollm2
def test_extended_tokenizer_and_checkpoint_config_load_alike_under_transformers_4_57(extended, tmp_path):
    from transformers import LlamaConfig

    from lm_platform.tokenization.hf_compat import write_compatible_config

    _, out, _ = extended
    cfg_dir = tmp_path / "ckpt"
    LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=BASE_VOCAB + NEW,
        rope_theta=100000.0,
    ).save_pretrained(str(cfg_dir))
    write_compatible_config(cfg_dir)
    texts = ["Xin chào Việt Nam, ở đây với những thành phố.", "Die Straße", "<|im_start|>user\nhi<|im_end|>"]
    got = _under_tf4([["tokenizer", str(out), texts], ["config", str(cfg_dir), []]])
    tok = _load(out)
    assert got[str(out)] == {"len": len(tok), "ids": [tok.encode(t, add_special_tokens=False) for t in texts]}
    assert got[str(cfg_dir)] == {"rope_theta": 100000.0, "vocab_size": BASE_VOCAB + NEW}
    assert sys.modules["transformers"].__version__.startswith("5.")


@pytest.fixture(scope="module")
def ja_sentencepiece(tmp_path_factory):
    if not (REALTEXT / "ja_wiki_leads.jsonl").exists():
        pytest.skip(f"real Japanese text is absent ({REALTEXT} not found)")
    from lm_platform.recipe.schema import TokenizerConfig
    from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

    docs = [d["text"] for d in _docs("ja_wiki_leads.jsonl")] + [
        d["text"] for d in _docs("ja_aozora.jsonl")[:10]
    ]
    out = tmp_path_factory.mktemp("sp") / "tokenizer"
    cfg = TokenizerConfig(vocab_size=4000, user_defined_symbols=("<|user|>",), max_sentences=20000, seed=3)
    train_sentencepiece(docs[:-30], out, cfg)
    return out, docs, cfg


def test_sentencepiece_export_loads_alike_under_transformers_4_57(ja_sentencepiece):
    out, docs, _ = ja_sentencepiece
    texts = docs[-5:] + ["<|user|>こんにちは"]
    got = _under_tf4([["tokenizer", str(out), texts]])
    tok = _load(out)
    assert got[str(out)] == {"len": len(tok), "ids": [tok.encode(t, add_special_tokens=False) for t in texts]}


def test_packing_encodes_real_japanese_exactly_as_the_hf_tokenizer(ja_sentencepiece, tmp_path):
    """The token shards' ids (what packing assembles) are the HF tokenizer's (what inference uses), on
    every document, though the SentencePiece model beside it breaks some BPE ties differently."""
    import numpy as np
    import pyarrow.parquet as pq

    from lm_platform.data.blending.tokens import DOCS_FILE, tokenize_source, tokens_file
    from lm_platform.data.corpus.documents import DocWriter, make_doc

    out, docs, _ = ja_sentencepiece
    tok = _load(out)
    texts = docs[-200:] + [d["text"][:3000] for d in _docs("ja_aozora.jsonl")[10:30]]
    with DocWriter(tmp_path / "ja.parquet") as w:
        w.write_all(make_doc(f"ja/{i}", t, "ja", "CC0-1.0", "ja") for i, t in enumerate(texts))
    tokenize_source(tmp_path / "ja.parquet", out, tmp_path / "tokens", source="ja")
    rows = pq.read_table(tmp_path / "tokens" / DOCS_FILE).to_pylist()
    shard = np.load(tmp_path / "tokens" / tokens_file(0))
    ids = [shard[r["offset"] : r["offset"] + r["tokens"]].tolist() for r in rows]
    assert ids == [tok.encode(t, add_special_tokens=False) for t in texts]


def test_sentencepiece_training_is_deterministic(ja_sentencepiece, tmp_path):
    from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

    out, docs, cfg = ja_sentencepiece
    train_sentencepiece(docs[:-30], tmp_path / "again", cfg)
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()


def test_checkpoints_carry_rope_theta_as_transformers_4_57_reads_it(tmp_path):
    """`training.checkpoint.save` writes config.json in both RoPE spellings: 4.57 reads 100,000, not 10,000."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lm_platform.training.checkpoint import save

    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=300,
        rope_theta=100000.0,
    )
    model = LlamaForCausalLM(cfg)
    optimizer = torch.optim.AdamW(model.parameters())
    out = save(tmp_path / "step_00000001", model, optimizer, {"step": 1}, tmp_path / "no_tokenizer")
    written = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert written["rope_theta"] == 100000.0 and written["rope_parameters"]["rope_theta"] == 100000.0
    got = _under_tf4([["config", str(out), []]])
    assert got[str(out)] == {"rope_theta": 100000.0, "vocab_size": 300}
