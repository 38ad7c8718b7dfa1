"""Tokenize-and-pack throughput: our stage vs datatrove's DocumentTokenizer vs bare `tokenizers`.

Equivalent work: the same Parquet blend and the same tokenizer (the project's SentencePiece BPE export,
trained here on the demo text), every document encoded as BOS + ids + EOS in input order, written as
uint16 tokens to disk. Ours packs into `seq_len + 1` rows in one process (it encodes with the HF
tokenizer, as inference does; see lm_platform.data.pack._Encoder);
datatrove reads the Parquet with its ParquetReader and tokenizes with `DocumentTokenizer` (BOS/EOS by a
template post-processor, no shuffling, one task, as its docs run it); the floor is bare
`Tokenizer.encode_batch_fast` on texts already in memory (no reading, no BOS/EOS, no writing).
Agreement: the share of documents whose ids are identical in our shards and datatrove's output.

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

from lm_platform.data.documents import DocWriter, make_doc
from lm_platform.data.pack import INDEX_FILE, pack_dataset, tokenizer_meta
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
    index = pack_dataset(blend, tok_dir, out, SEQ_LEN, val_fraction=0.0, shuffle_buffer=0, workers=WORKERS)
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


def agreement(ours: Path, theirs: Path) -> float:
    """Share of documents with identical ids in our shards and datatrove's .ds output."""
    import json

    index = json.loads((ours / INDEX_FILE).read_text())
    body = []
    for shard in index["splits"]["train"]["shards"]:
        flat = np.load(ours / shard["file"]).reshape(-1)
        body.append(flat[: len(flat) - shard["padding"]])
    mine = np.concatenate(body)
    my_ends = np.flatnonzero(mine == index["eos_id"]) + 1
    (ds,) = theirs.glob("*.ds")
    their = np.frombuffer(ds.read_bytes(), dtype="<u2")
    raw = (theirs / f"{ds.name}.index").read_bytes()
    their_ends = np.asarray(struct.unpack(f"<{len(raw) // 8}Q", raw))
    if len(my_ends) != len(their_ends):
        return 0.0
    same, start_a, start_b = 0, 0, 0
    for ea, eb in zip(my_ends, their_ends, strict=True):
        same += np.array_equal(mine[start_a:ea], their[start_b:eb])
        start_a, start_b = ea, eb
    return same / len(my_ends)


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
                agree = agreement(outs["ours"], outs["datatrove"])
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
