"""Train a SentencePiece tokenizer and export it as an HF tokenizer directory.

The export builds a `tokenizers` pipeline that follows SentencePiece's segmentation (BPE merges ranked
by piece score, byte fallback), so `AutoTokenizer.from_pretrained(dir)` works without the sentencepiece
package, and `tokenizer.model` is kept beside it. The two agree on nearly every text but not all (BPE
ties between equal-length merges are broken differently, e.g. `お前が|有る` against `お前|が有る`): the HF
tokenizer is the reference, and packing encodes with it, as inference does. The files are written in
the form transformers 4.57 and 5.x both load (`hf_compat`). Training is seeded with `tokenizer.seed`. Training uses no normalisation and no
dummy prefix: curation already normalised the text, and decode(encode(x)) == x holds exactly.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

from lm_platform.atomic import atomic_dir
from lm_platform.recipe.schema import TokenizerConfig
from lm_platform.tokenization.hf_compat import make_tokenizer_compatible

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
# A fixed thread count, not the machine's: SentencePiece splits its work per thread and sums the parts,
# so the count (never the machine) decides the result; with it and the seed, training is deterministic.
SP_THREADS = 2


def train_sentencepiece(texts: Iterable[str], out_dir: str | Path, cfg: TokenizerConfig) -> dict:
    """Train on `texts` (one document each; each line is a sentence) and write an HF tokenizer to
    `out_dir` atomically. Returns a summary (vocab size, sentences used, special and added tokens)."""
    with tempfile.TemporaryDirectory() as work, atomic_dir(out_dir) as tmp:
        corpus = Path(work) / "corpus.txt"
        sentences = 0
        with corpus.open("w", encoding="utf-8") as fh:
            for text in texts:
                for line in text.split("\n"):
                    if line.strip():
                        fh.write(line + "\n")
                        sentences += 1
        if sentences == 0:
            raise ValueError("tokenizer training: the training text is empty")
        prefix = Path(work) / "spm"
        # Sampling is ours, seeded (SentencePiece's own sampler ignores the seed we can give it): beyond
        # max_sentences, a seeded choice of sentences, kept in input order. An iterator and a writer rather
        # than file names: the model then records no temporary path, and the same input and seed give a
        # byte-identical tokenizer.model.
        keep = _sample(sentences, cfg.max_sentences, cfg.seed)
        spm.set_random_generator_seed(cfg.seed)
        model = io.BytesIO()
        with corpus.open(encoding="utf-8") as lines:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(
                    line.rstrip("\n") for i, line in enumerate(lines) if keep is None or keep[i]
                ),
                model_writer=model,
                model_type=cfg.model_type,
                vocab_size=cfg.vocab_size,
                character_coverage=cfg.character_coverage,
                byte_fallback=cfg.byte_fallback,
                user_defined_symbols=list(cfg.user_defined_symbols),
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                split_digits=True,
                allow_whitespace_only_pieces=True,
                max_sentence_length=1 << 16,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                hard_vocab_limit=False,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=3,
                unk_piece=UNK,
                bos_piece=BOS,
                eos_piece=EOS,
                pad_piece=PAD,
                num_threads=SP_THREADS,
                minloglevel=2,
            )
        model_file = prefix.with_suffix(".model")
        model_file.write_bytes(model.getvalue())
        vocab_size = export_hf(model_file, tmp, cfg.model_type, cfg.user_defined_symbols)
        make_tokenizer_compatible(tmp)
        shutil.copy(model_file, tmp / "tokenizer.model")
    return {
        "vocab_size": vocab_size,
        "model_type": cfg.model_type,
        "sentences": sentences,
        "sentences_used": min(sentences, cfg.max_sentences),
        "seed": cfg.seed,
        "special_tokens": [UNK, BOS, EOS, PAD],
        "added_tokens": list(cfg.user_defined_symbols),
    }


def _sample(n: int, k: int, seed: int) -> np.ndarray | None:
    """A seeded choice of `k` of `n` sentences as a boolean mask (None: keep all)."""
    if n <= k:
        return None
    keep = np.zeros(n, dtype=bool)
    keep[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    return keep


def export_hf(model_file: Path, out_dir: Path, model_type: str, user_symbols: Iterable[str] = ()) -> int:
    """Write `tokenizer.json` and `tokenizer_config.json` reproducing the SentencePiece model."""
    from transformers import PreTrainedTokenizerFast

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    user = set(user_symbols)
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    special = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    plain = {p for i, p in enumerate(pieces) if i not in special and not sp.is_byte(i) and p not in user}
    vocab = {p: i for i, p in enumerate(pieces)}
    if model_type == "bpe":
        merges = sorted(
            (vocab[p], vocab[p[:k]], vocab[p[k:]], p[:k], p[k:])
            for p in plain
            for k in range(1, len(p))
            if p[:k] in plain and p[k:] in plain
        )
        model = models.BPE(
            vocab=vocab,
            merges=[(a, b) for *_, a, b in merges],
            unk_token=UNK,
            byte_fallback=True,
            fuse_unk=True,
        )
    else:
        model = models.Unigram(
            [(p, sp.get_score(i)) for i, p in enumerate(pieces)], unk_id=0, byte_fallback=True
        )
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False) for i in special])
    tok.add_tokens([AddedToken(p, special=False, normalized=False) for p in pieces if p in user])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD
    )
    hf.save_pretrained(str(out_dir))
    return n
