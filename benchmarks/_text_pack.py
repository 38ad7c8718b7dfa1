"""Tokenize-while-packing from a text blend: the peer of `benchmarks.blend` (the path before the platform
tokenized each source once into `tokens/<source>`).

`pack_text` reads the blend's `data.parquet` (document text), tokenizes it with the HF tokenizer and
writes the same packed format as `data.blending.pack.pack_tokens` (BOS + ids + EOS per document, the same
train/val rule, rows of `seq_len + 1`, `index.json`). With `workers > 1` the Parquet row groups are cut
into contiguous parts, each packed by its own process into its own shards, numbered in part order
afterwards. Only the benchmark uses it; no shuffling and no loss masks (the benchmark asks for neither).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.data.blending.pack import (
    INDEX_FILE,
    SPLITS,
    _SplitWriter,
    is_val,
    token_dtype,
    tokenizer_meta,
)


@dataclass(frozen=True)
class _Part:
    blend_file: str
    row_groups: tuple[int, ...]
    tokenizer_file: str
    out_dir: str
    part: int
    row_len: int
    rows_per_shard: int
    dtype: str
    head: tuple[int, ...]
    eos: int
    pad: int
    val_fraction: float
    batch_docs: int


def _pack_part(part: _Part) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(part.tokenizer_file)
    dtype = np.dtype(part.dtype)
    out = Path(part.out_dir)
    writers = {
        s: _SplitWriter(
            out, f"p{part.part:04d}_{s}", part.row_len, part.rows_per_shard, dtype, part.pad, False
        )
        for s in SPLITS
    }
    head, tail = np.asarray(part.head, dtype=dtype), np.asarray([part.eos], dtype=dtype)
    pf = pq.ParquetFile(part.blend_file)
    for batch in pf.iter_batches(
        part.batch_docs, row_groups=list(part.row_groups), columns=["id", "text", "source"]
    ):
        d = batch.to_pydict()
        encoded = tok.encode_batch_fast(d["text"], add_special_tokens=False)
        for doc_id, source, enc in zip(d["id"], d["source"], encoded, strict=True):
            ids = np.concatenate([head, np.asarray(enc.ids, dtype=dtype), tail])
            writers["val" if is_val(doc_id, part.val_fraction) else "train"].add(ids, source)
    return {s: w.close() for s, w in writers.items()}


def _worker_init() -> None:
    # Processes already divide the cores; a thread pool per process would only oversubscribe them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _merge(tmp: Path, split: str, parts: list[dict]) -> dict:
    """Rename the parts' shards `{split}_NNNNN.npy` in part order and sum their counts."""
    shards = []
    for p in parts:
        for s in p["shards"]:
            name = f"{split}_{len(shards):05d}.npy"
            os.replace(tmp / s["file"], tmp / name)
            shards.append({**s, "file": name})
    merged = {k: sum(p[k] for p in parts) for k in ("docs", "tokens", "rows", "padding")}
    sources: dict[str, int] = {}
    for p in parts:
        for name, n in p["sources"].items():
            sources[name] = sources.get(name, 0) + n
    return {**merged, "shards": shards, "sources": dict(sorted(sources.items()))}


def pack_text(
    blend_file: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    seq_len: int,
    val_fraction: float = 0.05,
    workers: int = 1,
    rows_per_shard: int = 8192,
    batch_docs: int = 1024,
) -> dict:
    """Tokenize and pack `blend_file` into `out_dir`; returns the index (also `index.json`)."""
    tokenizer_dir = Path(tokenizer_dir)
    meta = tokenizer_meta(tokenizer_dir)
    dtype = token_dtype(meta.vocab_size)
    n_groups = pq.ParquetFile(blend_file).num_row_groups
    workers = max(1, min(workers, n_groups))
    bounds = np.linspace(0, n_groups, workers + 1).astype(int)
    with atomic_dir(out_dir) as tmp:
        parts = [
            _Part(
                str(blend_file),
                tuple(range(bounds[i], bounds[i + 1])),
                str(tokenizer_dir / "tokenizer.json"),
                str(tmp),
                i,
                seq_len + 1,
                rows_per_shard,
                dtype.name,
                (meta.bos_id,) if meta.bos_id != meta.eos_id else (),
                meta.eos_id,
                meta.pad_id,
                val_fraction,
                batch_docs,
            )
            for i in range(workers)
        ]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
            results = list(pool.map(_pack_part, parts))
        splits = {s: _merge(tmp, s, [r[s] for r in results]) for s in SPLITS}
        index = {
            "seq_len": seq_len,
            "row_len": seq_len + 1,
            "dtype": dtype.name,
            "vocab_size": meta.vocab_size,
            "workers": workers,
            "tokens": sum(s["tokens"] for s in splits.values()),
            "splits": splits,
        }
        write_json(tmp / INDEX_FILE, index)
    return index
