"""Tokenize-and-pack throughput: the platform's path vs datatrove's DocumentTokenizer vs bare `tokenizers`.

Equivalent work: the same Parquet file of documents and the same tokenizer (the project's SentencePiece
BPE export, trained here on the demo text), every document encoded as BOS + ids + EOS, written as uint16
tokens to disk. Ours is what the platform runs for one source and one stage: `tokens/<source>`
(`data.blending.tokens.tokenize_source`, one process), a blend taking every document (`data.blending.blend.blend_tokens`),
and packing from the token shards into `seq_len + 1` rows (`data.blending.pack.pack_tokens`, no validation split);
datatrove reads the Parquet with its ParquetReader and tokenizes with `DocumentTokenizer` (BOS/EOS by a
template post-processor, no shuffling, one task, as its docs run it); the floor is bare
`Tokenizer.encode_batch_fast` on texts already in memory (no reading, no BOS/EOS, no writing).
Agreement: the share of documents whose ids (with BOS and EOS) are identical in our token shards and
datatrove's output.

    python -m benchmarks.tokenize [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lm_platform.data.blending.blend import blend_tokens
from lm_platform.data.blending.pack import boundary_tokens, pack_tokens, tokenizer_meta
from lm_platform.data.blending.tokens import DOCS_FILE, tokenize_source, tokens_file
from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.demo.generate import read_paragraphs
from lm_platform.recipe.schema import TokenizerConfig
from lm_platform.tokenization.sentencepiece_trainer import BOS, EOS, train_sentencepiece

SEQ_LEN = 2048
WORKERS = 1  # the encoders already use every core; worker processes pay for starting


def make_blend(path: Path, n_docs: int, seed: int = 0) -> int:
    """`n_docs` documents of 1-4 demo paragraphs each (vi, ja, en), in Parquet row groups of 2048."""
    rng = random.Random(seed)
    paras = [p for lang in ("vi", "ja", "en") for p in read_paragraphs(lang)]
    chars = 0
    with DocWriter(path) as w:
        for i in range(n_docs):
            text = "\n\n".join(rng.choice(paras) for _ in range(rng.randint(1, 4)))
            chars += len(text)
            w.write(make_doc(f"bench/{i}", text, "bench", "CC0-1.0", "mixed"))
    return chars


def run_ours(blend: Path, tok_dir: Path, out: Path) -> tuple[float, int]:
    t = time.perf_counter()
    summary = tokenize_source(blend, tok_dir, out / "tokens", source="bench", workers=WORKERS)
    boundary = boundary_tokens(tokenizer_meta(tok_dir))
    every = summary["tokens"] + boundary * summary["docs"]
    tokens = {"bench": out / "tokens"}
    blend_tokens(tokens, {"bench": 1.0}, every, out / "blend", boundary_tokens=boundary)
    index = pack_tokens(out / "blend", tokens, tok_dir, out / "dataset", SEQ_LEN, 0.0, shuffle_buffer=0)
    return time.perf_counter() - t, index["tokens"]


def run_datatrove(blend: Path, tok_dir: Path, out: Path) -> tuple[float, int]:
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    vocab = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    t = time.perf_counter()
    reader = ParquetReader(str(blend.parent), glob_pattern=blend.name, text_key="text", id_key="id")
    step = DocumentTokenizer(
        output_folder=str(out),
        tokenizer_name_or_path=str(tok_dir / "tokenizer.json"),
        shuffle_documents=False,
        save_final_metadata=False,
        batch_size=1000,
    )
    step.post_processor = TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        special_tokens=[(BOS, vocab.token_to_id(BOS)), (EOS, vocab.token_to_id(EOS))],
    )
    for _ in step.run(reader.run()) or ():
        pass
    elapsed = time.perf_counter() - t
    tokens = sum(f.stat().st_size for f in out.glob("*.ds")) // 2
    return elapsed, tokens


def run_floor(texts: list[str], tok_dir: Path) -> tuple[float, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    t = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), 1000):
        for enc in tok.encode_batch_fast(texts[i : i + 1000], add_special_tokens=False):
            tokens += len(enc.ids)
    return time.perf_counter() - t, tokens + 2 * len(texts)  # BOS/EOS counted as the others write them


def agreement(ours: Path, theirs: Path, tok_dir: Path) -> float:
    """Share of documents with identical ids (BOS + ids + EOS) in our token shards and datatrove's .ds
    output, in input order."""
    meta = tokenizer_meta(tok_dir)
    docs = pq.read_table(ours / "tokens" / DOCS_FILE, columns=["part", "offset", "tokens"]).to_pylist()
    parts: dict[int, np.ndarray] = {}
    (ds,) = theirs.glob("*.ds")
    their = np.frombuffer(ds.read_bytes(), dtype="<u2")
    raw = (theirs / f"{ds.name}.index").read_bytes()
    their_ends = np.asarray(struct.unpack(f"<{len(raw) // 8}Q", raw))
    if len(docs) != len(their_ends):
        return 0.0
    same, start = 0, 0
    for doc, end in zip(docs, their_ends, strict=True):
        if doc["part"] not in parts:
            parts[doc["part"]] = np.load(ours / "tokens" / tokens_file(doc["part"]))
        ids = parts[doc["part"]][doc["offset"] : doc["offset"] + doc["tokens"]]
        mine = np.concatenate([[meta.bos_id], ids, [meta.eos_id]])
        same += np.array_equal(mine, their[start:end])
        start = end
    return same / len(docs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small input, 3 rounds (< 60 s)")
    args = parser.parse_args(argv)
    n_docs, rounds = (5_000, 3) if args.quick else (25_000, 5)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import logging

    from datatrove.utils.logging import logger as dt_logger

    dt_logger.remove()
    logging.getLogger("datatrove").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        tok_dir = work / "tokenizer"
        train_sentencepiece(
            (p for lang in ("vi", "ja", "en") for p in read_paragraphs(lang)),
            tok_dir,
            TokenizerConfig(vocab_size=8000, user_defined_symbols=("<|user|>",)),
        )
        blend = work / "blend" / "data.parquet"
        blend.parent.mkdir()
        chars = make_blend(blend, n_docs)
        texts = pq.read_table(blend, columns=["text"]).column("text").to_pylist()
        tokenizer_meta(tok_dir)  # imports transformers once, outside the timed rounds
        print(f"input: {n_docs:,} documents, {chars / 1e6:.1f} M chars; tokenizer: SentencePiece BPE 8000")
        print(f"{'round':>5} {'ours tok/s':>12} {'datatrove tok/s':>16} {'floor tok/s':>12}")
        rates: dict[str, list[float]] = {"ours": [], "datatrove": [], "floor": []}
        counts: dict[str, int] = {}
        agree = None
        for r in range(rounds):
            outs = {name: work / f"{name}_{r}" for name in ("ours", "datatrove")}
            for name in ["ours", "datatrove", "floor"] if r % 2 == 0 else ["floor", "datatrove", "ours"]:
                if name == "ours":
                    secs, n = run_ours(blend, tok_dir, outs[name])
                elif name == "datatrove":
                    secs, n = run_datatrove(blend, tok_dir, outs[name])
                else:
                    secs, n = run_floor(texts, tok_dir)
                rates[name].append(n / secs)
                counts[name] = n
            if agree is None:
                agree = agreement(outs["ours"], outs["datatrove"], tok_dir)
            print(
                f"{r:>5} {rates['ours'][-1]:>12,.0f} {rates['datatrove'][-1]:>16,.0f} {rates['floor'][-1]:>12,.0f}"
            )
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"tokens: ours {counts['ours']:,}, datatrove {counts['datatrove']:,}, floor {counts['floor']:,}"
        )
        print(
            f"median tok/s: ours {med['ours']:,.0f}, datatrove {med['datatrove']:,.0f}, floor {med['floor']:,.0f}"
        )
        same_tokens = counts["ours"] == counts["datatrove"] == counts["floor"]
    print(
        f"RESULT name=tokenize ours={med['ours']:.0f} peer={med['datatrove']:.0f} "
        f"ratio={med['ours'] / med['datatrove']:.3f} unit=tokens/s higher_is_better=true "
        f"floor={med['floor']:.0f} floor_ratio={med['ours'] / med['floor']:.3f} agreement={agree:.4f} "
        f"same_token_count={str(same_tokens).lower()} docs={n_docs}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
