"""A small byte-level BPE tokenizer in the style of GPT-2 / SmolLM2, saved as an HF tokenizer directory.

It plays the part of an English-centric base tokenizer (SmolLM2's) where no hub download is allowed:
the demo ships one trained on its English and Japanese text only, so Vietnamese costs it many tokens
per word and EEVE extension (`tokenization.eeve`) has something to fix. The pipeline is SmolLM2's:
digits split one by one, ByteLevel pre-tokenizer and decoder without a prefix space, BPE, no
normaliser; `AutoTokenizer.from_pretrained(dir)` loads it exactly as it would a hub id.

Training is deterministic: `tokenizers`' BPE trainer breaks count ties by pair ids, and with the full
byte alphabet given up front and no continuing-subword prefix every id is assigned in a fixed order
(the lazily created `##` tokens of WordPiece-style training are what makes that trainer vary from run
to run, huggingface/tokenizers#1794). The files are written with sorted keys so the same text gives the
same bytes; a test rebuilds the demo's copy and compares.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lm_platform.atomic import atomic_dir

# SmolLM2's first three special tokens, then two of our own: SmolLM2 uses <|endoftext|> as BOS, EOS
# and padding at once; a distinct BOS keeps document starts and ends apart in packed data (packing pads
# with an id of its own either way).
EOS, IM_START, IM_END, BOS, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|startoftext|>", "<|pad|>"
SPECIAL_TOKENS = (EOS, IM_START, IM_END, BOS, PAD)


def byte_level_bpe_files(texts: Iterable[str], vocab_size: int) -> dict[str, bytes]:
    """Train on `texts`; the HF tokenizer directory's files (name -> exact bytes).

    `vocab_size` counts the 256 byte symbols and the special tokens."""

    if vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size}: a byte-level BPE needs more than 256 + special tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
    }
    return {
        # `to_str` lists the vocabulary by id and the merges in training order.
        "tokenizer.json": (tok.to_str() + "\n").encode("utf-8"),
        "tokenizer_config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"),
    }


def train_byte_level_bpe(texts: Iterable[str], out_dir: str | Path, vocab_size: int) -> None:
    """Train on `texts` and write the HF tokenizer directory `out_dir` atomically."""
    files = byte_level_bpe_files(texts, vocab_size)
    with atomic_dir(out_dir) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
