"""The demo corpus: committed files match the generator; every kind of noise is present and labelled."""

from __future__ import annotations

import collections
import gzip
import json

from lm_platform.demo.generate import DEFAULT_OUT, NOISE_LABELS, SOURCES, read_paragraphs, render


def test_committed_demo_data_matches_the_generator():
    files = render()
    assert set(files) == {name for _, _, name in SOURCES} | {"heldout.jsonl"}
    for name, data in files.items():
        assert (DEFAULT_OUT / name).read_bytes() == data, (
            f"{name} is stale: run python -m lm_platform.demo.generate"
        )


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
