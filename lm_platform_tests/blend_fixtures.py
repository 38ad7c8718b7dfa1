"""Tokenized sources whose documents cost a chosen number of tokens, for the blend tests.

A word-level tokenizer (one id per whitespace-separated word) makes a document of n words exactly n
tokens, so a blend's targets and takes can be stated in whole documents. The sources go through the
platform's own `tokenize_source`, as `tokens/<source>` does.
"""

from __future__ import annotations

from pathlib import Path

from lm_platform.data.blending.tokens import tokenize_source
from lm_platform.data.corpus.documents import DocWriter, make_doc

BOUNDARY = 2  # BOS + EOS: what `blend_tokens` adds to each document by default
WORDS = [f"w{i}" for i in range(20)]


def word_tokenizer(directory: Path) -> Path:
    """An HF `tokenizer.json` with one id per word of `WORDS` (unknown words map to `<unk>`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    if (directory / "tokenizer.json").exists():
        return directory
    vocab = {"<unk>": 0} | {w: i + 1 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return directory


def tokenized_source(
    base: Path, name: str, n_docs: int, tokens: int = 100, license: str = "CC0-1.0", lang: str = "en"
) -> Path:
    """`tokens/<name>` under `base` for `n_docs` documents that each cost `tokens` packed tokens
    (`tokens - BOUNDARY` words); ids `<name>-<i>`."""
    path = base / f"{name}.parquet"
    with DocWriter(path) as w:
        for i in range(n_docs):
            words = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(tokens - BOUNDARY))
            w.write(make_doc(f"{name}-{i}", words, name, license, lang))
    out = base / "tokens" / name
    tokenize_source(path, word_tokenizer(base / "tokenizer"), out, source=name)
    return out
