"""The demo corpus: committed files match the generator; every kind of noise is present and labelled."""

from __future__ import annotations

import collections
import gzip
import json

from lm_platform.demo.generate import (
    BASE_TOKENIZER,
    BASE_TOKENIZER_VOCAB,
    DEFAULT_OUT,
    NOISE_LABELS,
    SOURCES,
    read_paragraphs,
    render,
)

BASE_FILES = {f"{BASE_TOKENIZER}/tokenizer.json", f"{BASE_TOKENIZER}/tokenizer_config.json"}


def test_committed_demo_data_matches_the_generator():
    """Byte for byte, the base tokenizer included: this process trains it afresh (the `tokenizers`
    trainer's hash maps are seeded anew in every process), so a trainer that varied from run to run
    would fail here."""
    files = render()
    assert set(files) == {name for _, _, name in SOURCES} | {"heldout.jsonl"} | BASE_FILES
    for name, data in files.items():
        assert (DEFAULT_OUT / name).read_bytes() == data, (
            f"{name} is stale: run python -m lm_platform.demo.generate"
        )
    assert {p.name for p in (DEFAULT_OUT / BASE_TOKENIZER).iterdir()} == {n.split("/")[1] for n in BASE_FILES}


def test_base_tokenizer_is_byte_level_bpe_that_never_saw_vietnamese():
    from transformers import AutoTokenizer

    from lm_platform.tokenization.byte_level import BOS, EOS, PAD

    tok = AutoTokenizer.from_pretrained(str(DEFAULT_OUT / BASE_TOKENIZER))
    assert len(tok) == BASE_TOKENIZER_VOCAB
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    model = json.loads((DEFAULT_OUT / BASE_TOKENIZER / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    assert model["type"] == "BPE"
    for lang in ("vi", "ja", "en"):
        for text in read_paragraphs(lang)[:20]:
            assert tok.decode(tok.encode(text, add_special_tokens=False)) == text

    def tokens_per_word(lang):
        texts = read_paragraphs(lang)
        return sum(len(tok.encode(t, add_special_tokens=False)) for t in texts) / sum(
            len(t.split()) for t in texts
        )

    # No Vietnamese letter with a diacritic is a token of its own: each costs two or three pieces.
    assert tokens_per_word("vi") > 1.5 * tokens_per_word("en")
    vi_letters = {ch for t in read_paragraphs("vi") for ch in t if ord(ch) > 0x7F and ch.isalpha()}
    assert len(vi_letters) > 20 and all(len(tok.tokenize(ch)) >= 2 for ch in vi_letters)


def _records(name):
    data = (DEFAULT_OUT / name).read_bytes()
    data = gzip.decompress(data) if name.endswith(".gz") else data
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def test_every_source_has_clean_text_and_labelled_noise():
    all_labels = collections.Counter()
    for source, _, name in SOURCES:
        recs = _records(name)
        labels = collections.Counter(r["meta"]["label"] for r in recs)
        all_labels.update(labels)
        assert labels["clean"] >= 50, source
        assert len({r["id"] for r in recs}) == len(recs)
    assert set(all_labels) == {"clean", *NOISE_LABELS}


def test_heldout_text_is_not_in_the_training_sources():
    heldout = {r["text"] for r in _records("heldout.jsonl")}
    assert len(heldout) == 45
    for _, _, name in SOURCES:
        assert not heldout & {r["text"] for r in _records(name)}


def test_texts_have_a_few_hundred_paragraphs_per_language():
    assert {lang: len(read_paragraphs(lang)) for lang in ("vi", "ja", "en")} == {
        "vi": 150,
        "ja": 150,
        "en": 150,
    }
