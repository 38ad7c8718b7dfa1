"""Tokenize documents and pack them into fixed-length sequences stored as NumPy shards.

Each document becomes BOS + tokens + EOS. Documents go to train or val by a hash of their id (stable
across runs and independent of order), are concatenated per split and cut into rows of `seq_len + 1`
tokens (inputs and shifted labels). The last row of a split is padded with the pad id, which training
ignores. Shards are uint16 when the vocabulary fits, else uint32, with `index.json` describing them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lm_platform.atomic import atomic_dir, read_json, write_json
from lm_platform.data.documents import iter_docs

INDEX_FILE = "index.json"
SPLITS = ("train", "val")


def is_val(doc_id: str, val_fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") % 1_000_000
    return bucket < val_fraction * 1_000_000


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


class _SplitWriter:
    def __init__(self, out_dir: Path, split: str, row_len: int, rows_per_shard: int, dtype: np.dtype, pad: int):
        self.out_dir, self.split, self.row_len = out_dir, split, row_len
        self.rows_per_shard, self.dtype, self.pad = rows_per_shard, dtype, pad
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.shards: list[dict] = []
        self.tokens = 0
        self.docs = 0

    def add(self, ids: np.ndarray) -> None:
        self.buffer.append(ids)
        self.buffered += len(ids)
        self.tokens += len(ids)
        self.docs += 1
        if self.buffered >= self.rows_per_shard * self.row_len:
            self._write(final=False)

    def _write(self, final: bool) -> None:
        flat = np.concatenate(self.buffer) if self.buffer else np.zeros(0, dtype=self.dtype)
        rows = len(flat) // self.row_len
        if final and len(flat) % self.row_len:
            rows += 1
            flat = np.concatenate([flat, np.full(rows * self.row_len - len(flat), self.pad, dtype=self.dtype)])
        if rows == 0:
            return
        take = rows * self.row_len
        name = f"{self.split}_{len(self.shards):05d}.npy"
        np.save(self.out_dir / name, flat[:take].reshape(rows, self.row_len))
        self.shards.append({"file": name, "rows": rows})
        rest = flat[take:]
        self.buffer, self.buffered = ([rest], len(rest)) if len(rest) else ([], 0)

    def close(self) -> dict:
        self._write(final=True)
        rows = sum(s["rows"] for s in self.shards)
        return {"docs": self.docs, "tokens": self.tokens, "rows": rows, "padding": rows * self.row_len - self.tokens,
                "shards": self.shards}


def pack_dataset(
    blend_file: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    seq_len: int,
    val_fraction: float = 0.05,
    rows_per_shard: int = 8192,
    batch_docs: int = 256,
) -> dict:
    """Tokenize `blend_file` with the tokenizer at `tokenizer_dir` and write packed shards to `out_dir`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab_size = len(tok)
    dtype = token_dtype(vocab_size)
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    per_source: dict[str, dict[str, int]] = {}
    with atomic_dir(out_dir) as tmp:
        writers = {s: _SplitWriter(tmp, s, seq_len + 1, rows_per_shard, dtype, pad) for s in SPLITS}
        for batch in _batches(blend_file, batch_docs):
            encoded = tok([d["text"] for d in batch], add_special_tokens=False)["input_ids"]
            for doc, ids in zip(batch, encoded, strict=True):
                split = "val" if is_val(doc["id"], val_fraction) else "train"
                writers[split].add(np.asarray([bos, *ids, eos], dtype=dtype))
                src = per_source.setdefault(doc["source"], {"docs": 0, "tokens": 0})
                src["docs"] += 1
                src["tokens"] += len(ids) + 2
        splits = {s: w.close() for s, w in writers.items()}
        index = {
            "seq_len": seq_len,
            "row_len": seq_len + 1,
            "dtype": dtype.name,
            "vocab_size": vocab_size,
            "bos_id": bos,
            "eos_id": eos,
            "pad_id": pad,
            "val_fraction": val_fraction,
            "tokens": sum(s["tokens"] for s in splits.values()),
            "splits": splits,
            "sources": per_source,
        }
        write_json(tmp / INDEX_FILE, index)
    return index


def _batches(path: str | Path, size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for doc in iter_docs(path, columns=["id", "text", "source"]):
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_split(dataset_dir: str | Path, split: str) -> np.ndarray:
    """All rows of one split as an (rows, seq_len + 1) array (memory-mapped shards, concatenated)."""
    dataset_dir = Path(dataset_dir)
    index = read_json(dataset_dir / INDEX_FILE)
    shards = [np.load(dataset_dir / s["file"], mmap_mode="r") for s in index["splits"][split]["shards"]]
    if not shards:
        return np.zeros((0, index["row_len"]), dtype=index["dtype"])
    return np.concatenate(shards) if len(shards) > 1 else shards[0]
