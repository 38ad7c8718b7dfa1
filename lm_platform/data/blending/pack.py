"""Pack a blend into fixed-length sequences stored as NumPy shards, from the sources' token shards.

The platform tokenizes each source once (`data.blending.tokens.tokenize_source`, `tokens/<source>`), a blend
picks documents by their exact token counts (`data.blending.blend.blend_tokens`, a document list), and
`pack_tokens` assembles that list here without tokenizing again. Each document becomes BOS + ids + EOS,
or ids + EOS where the tokenizer's BOS is its EOS or it has none (`boundary_id`: the one rule that
evaluation shares). Documents go to train or val by their id's hash bucket (`is_val`, stable across runs
and independent of order), are put in a seeded order (`shuffle_buffer` > 0), concatenated per split and
cut into rows of `seq_len + 1` tokens (inputs and shifted labels). The last row of a split is padded
with the pad id (`vocab_size`, an id no token has), which training ignores. Shards are uint16 when the
ids fit, else uint32, with `index.json` describing them. With `loss_mask`, each shard has a `.mask.npy`
twin (uint8, 1 = train on this token), made from the token shards' masks (`data.blending.tokens.span_mask`).

`load_split`, `load_split_mask` and `SplitReader` read a packed dataset back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lm_platform.atomic import atomic_dir, read_json, write_json
from lm_platform.data.blending.blend import read_document_list
from lm_platform.data.blending.tokens import (
    BUCKETS,
    DOCS_FILE,
    check_tokenizer,
    id_bucket,
    mask_file,
    tokens_file,
)
from lm_platform.results import JsonResult
from lm_platform.tokenization.hf_compat import load_tokenizer

INDEX_FILE = "index.json"
SPLITS = ("train", "val")
MASK_SUFFIX = ".mask.npy"


def is_val(doc_id: str, val_fraction: float) -> bool:
    """Whether the document is held out for validation: its id's hash bucket is below the fraction."""
    return id_bucket(doc_id) < val_fraction * BUCKETS


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, the padding id (`vocab_size`, one past the last token) included."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


@dataclass(frozen=True)
class TokenizerMeta:
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    # The tokenizer's own pad token for the model's config, unless it is BOS or EOS (an embedding's
    # padding row gets no gradient: a model trained with pad = EOS would never learn EOS's row).
    model_pad_id: int | None = None


def boundary_id(tok) -> int | None:
    """The token that precedes every document in training, and so every text a model is scored or
    prompted on: the tokenizer's BOS, or its EOS where it has no BOS (Qwen's, GPT-2's byte-level
    tokenizers): packing then separates documents by that one token, so each document follows it.
    One rule for packing (`tokenizer_meta`) and evaluation (log-likelihood, perplexity, generation)."""
    bos = getattr(tok, "bos_token_id", None)
    return bos if bos is not None else getattr(tok, "eos_token_id", None)


def tokenizer_meta(tokenizer_dir: str | Path) -> TokenizerMeta:
    """Vocabulary size and BOS/EOS ids of an HF tokenizer directory, as `AutoTokenizer` sees them, and the
    padding id: always `len(tokenizer)`, one past the last token, never the tokenizer's own pad token.
    Many tokenizers (SmolLM2's, Llama 3's) have none or reuse EOS or a chat token for it; padding with a
    real token would make training ignore that token wherever it occurs."""

    tok = load_tokenizer(tokenizer_dir)
    bos = boundary_id(tok)
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {tokenizer_dir}: no eos_token; packing separates documents with it")
    model_pad = tok.pad_token_id if tok.pad_token_id not in (bos, tok.eos_token_id) else None
    return TokenizerMeta(len(tok), bos, tok.eos_token_id, len(tok), model_pad)


class _SplitWriter:
    def __init__(
        self,
        out_dir: Path,
        prefix: str,
        row_len: int,
        rows_per_shard: int,
        dtype: np.dtype,
        pad: int,
        mask: bool,
    ):
        self.out_dir, self.prefix, self.row_len = out_dir, prefix, row_len
        self.rows_per_shard, self.dtype, self.pad, self.mask = rows_per_shard, dtype, pad, mask
        self.buffer: list[np.ndarray] = []
        self.mask_buffer: list[np.ndarray] = []
        self.buffered = 0
        self.shards: list[dict] = []
        self.tokens = 0
        self.docs = 0
        self.sources: dict[str, int] = {}

    def add(self, ids: np.ndarray, source: str, mask: np.ndarray | None = None) -> None:
        self.sources[source] = self.sources.get(source, 0) + len(ids)
        self.buffer.append(ids)
        if self.mask:
            self.mask_buffer.append(mask if mask is not None else np.ones(len(ids), dtype=np.uint8))
        self.buffered += len(ids)
        self.tokens += len(ids)
        self.docs += 1
        if self.buffered >= self.rows_per_shard * self.row_len:
            self._write(final=False)

    def _write(self, final: bool) -> None:
        flat = np.concatenate(self.buffer) if self.buffer else np.zeros(0, dtype=self.dtype)
        flat_mask = np.concatenate(self.mask_buffer) if self.mask_buffer else np.zeros(0, dtype=np.uint8)
        rows = len(flat) // self.row_len
        extra = 0
        if final and len(flat) % self.row_len:
            rows += 1
            extra = rows * self.row_len - len(flat)
            flat = np.concatenate([flat, np.full(extra, self.pad, dtype=self.dtype)])
            if self.mask:
                flat_mask = np.concatenate([flat_mask, np.zeros(extra, dtype=np.uint8)])
        if rows == 0:
            return
        take = rows * self.row_len
        name = f"{self.prefix}_{len(self.shards):05d}.npy"
        np.save(self.out_dir / name, flat[:take].reshape(rows, self.row_len))
        if self.mask:
            np.save(
                self.out_dir / name.replace(".npy", MASK_SUFFIX), flat_mask[:take].reshape(rows, self.row_len)
            )
        self.shards.append({"file": name, "rows": rows, "padding": extra})
        rest = flat[take:]
        self.buffer, self.buffered = ([rest], len(rest)) if len(rest) else ([], 0)
        if self.mask:
            rest_mask = flat_mask[take:]
            self.mask_buffer = [rest_mask] if len(rest_mask) else []

    def close(self) -> dict:
        self._write(final=True)
        rows = sum(s["rows"] for s in self.shards)
        return {
            "docs": self.docs,
            "tokens": self.tokens,
            "rows": rows,
            "padding": rows * self.row_len - self.tokens,
            "shards": self.shards,
            "sources": self.sources,
        }


def load_split(dataset_dir: str | Path, split: str) -> np.ndarray:
    """All rows of one split as an (rows, seq_len + 1) array (memory-mapped shards, concatenated in memory
    when there are several: for inspection and tests; the trainer reads rows on demand with `SplitReader`)."""
    dataset_dir = Path(dataset_dir)
    index = read_json(dataset_dir / INDEX_FILE)
    shards = [np.load(dataset_dir / s["file"], mmap_mode="r") for s in index["splits"][split]["shards"]]
    if not shards:
        return np.zeros((0, index["row_len"]), dtype=index["dtype"])
    return np.concatenate(shards) if len(shards) > 1 else shards[0]


def load_split_mask(dataset_dir: str | Path, split: str) -> np.ndarray | None:
    """The loss mask of one split, row-aligned with `load_split` (1 = train on the token), or None when
    the dataset was packed without masks."""
    dataset_dir = Path(dataset_dir)
    index = read_json(dataset_dir / INDEX_FILE)
    if not index.get("loss_mask"):
        return None
    files = [s["file"].replace(".npy", MASK_SUFFIX) for s in index["splits"][split]["shards"]]
    masks = [np.load(dataset_dir / f, mmap_mode="r") for f in files]
    if not masks:
        return np.zeros((0, index["row_len"]), dtype=np.uint8)
    return np.concatenate(masks) if len(masks) > 1 else masks[0]


class SplitReader:
    """One split's rows read on demand: each `rows(ids)` call reads just those rows (and their loss mask)
    from the shard files with positioned reads, so a process holds only what it asked for, never the whole
    split, however large it is (the page cache, not the process, keeps what the disk serves)."""

    def __init__(self, dataset_dir: str | Path, split: str) -> None:
        dataset_dir = Path(dataset_dir)
        index = read_json(dataset_dir / INDEX_FILE)
        self.row_len = int(index["row_len"])
        self.dtype = np.dtype(index["dtype"])
        self.has_mask = bool(index.get("loss_mask"))
        self._shards: list[tuple[str, int, int]] = []  # (file, data offset, rows)
        self._masks: list[tuple[str, int]] = []
        for shard in index["splits"][split]["shards"]:
            self._shards.append(self._locate(dataset_dir / shard["file"], self.dtype))
            if self.has_mask:
                mask_file = dataset_dir / shard["file"].replace(".npy", MASK_SUFFIX)
                self._masks.append(self._locate(mask_file, np.dtype(np.uint8))[:2])
        self._starts = np.cumsum([0] + [rows for _, _, rows in self._shards])
        self._fds: dict[str, int] = {}

    def _locate(self, path: Path, dtype: np.dtype) -> tuple[str, int, int]:
        view = np.load(path, mmap_mode="r")  # parses the header only; no data is read
        if view.ndim != 2 or view.shape[1] != self.row_len or view.dtype != dtype:
            raise ValueError(
                f"{path}: shape {view.shape} {view.dtype}, expected (rows, {self.row_len}) {dtype} "
                f"as {INDEX_FILE} says"
            )
        offset, rows = int(view.offset), int(view.shape[0])
        del view
        return str(path), offset, rows

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _read(self, file: str, offset: int, row: int, dtype: np.dtype) -> np.ndarray:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY)
        size = self.row_len * dtype.itemsize
        return np.frombuffer(os.pread(fd, size, offset + row * size), dtype=dtype)

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows `ids` (any order) as a (len(ids), row_len) array, and their loss mask (None without one)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.row_len), dtype=self.dtype)
        mask = np.empty((len(ids), self.row_len), dtype=np.uint8) if self.has_mask else None
        shard_of = np.searchsorted(self._starts, ids, side="right") - 1
        for i, (row, s) in enumerate(zip(ids.tolist(), shard_of.tolist(), strict=True)):
            if not 0 <= row < len(self):
                raise IndexError(f"row {row} outside the split's {len(self)} rows")
            file, offset, _ = self._shards[s]
            out[i] = self._read(file, offset, row - int(self._starts[s]), self.dtype)
            if mask is not None:
                mask[i] = self._read(*self._masks[s], row - int(self._starts[s]), np.dtype(np.uint8))
        return out, mask

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@dataclass(frozen=True, eq=False)  # equality: as the JSON mapping (JsonResult)
class PackResult(JsonResult):
    """What packing wrote: the fields of the dataset's `index.json`."""

    seq_len: int
    row_len: int
    dtype: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int
    model_pad_id: int | None
    boundary_tokens: int
    val_fraction: float
    shuffle_buffer: int
    seed: int
    loss_mask: bool
    tokens: int
    splits: dict
    sources: dict


def boundary_tokens(meta: TokenizerMeta) -> int:
    """Boundary tokens per packed document: 2 (BOS + EOS), or 1 where BOS is EOS (SmolLM2's
    `<|endoftext|>`): then each document is followed by that one token."""
    return 1 if meta.bos_id == meta.eos_id else 2


def pack_tokens(
    blend_dir: str | Path,
    tokens_dirs: dict[str, str | Path],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    seq_len: int,
    val_fraction: float = 0.05,
    rows_per_shard: int = 8192,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    loss_mask: bool = False,
    chunk_docs: int = 4096,
) -> PackResult:
    """Assemble the packed dataset of a blend's document list from the sources' token shards.

    Each document becomes BOS + ids + EOS (ids + EOS where BOS is EOS); documents go to train or val by
    their id's hash bucket (computed at tokenization, so the same split as `is_val`); with `shuffle_buffer`
    > 0 the whole document list is put in a seeded order first (any size shuffles everything: the list is
    a few integers per document, so no buffer is needed; 0 keeps the blend's order). Token shards are
    memory-mapped; memory is bounded by `chunk_docs` documents of ids plus the document list's columns."""
    import polars as pl

    tokenizer_dir = Path(tokenizer_dir)
    meta = tokenizer_meta(tokenizer_dir)
    dtype = token_dtype(meta.vocab_size)
    boundary = boundary_tokens(meta)
    doclist = read_document_list(blend_dir)
    names = sorted(set(doclist.column("source").to_pylist())) if doclist.num_rows else []
    for s in names:
        if s not in tokens_dirs:
            raise ValueError(f"blend {blend_dir} names source '{s}', which has no tokens/ directory here")
        check_tokenizer(tokens_dirs[s], tokenizer_dir)
    # One columnar table for the whole list: source code, part, offset, tokens, masked, val.
    frames = []
    for code, s in enumerate(names):
        docs = (
            pl.scan_parquet(Path(tokens_dirs[s]) / DOCS_FILE)
            .select("part", "offset", "tokens", "masked", "bucket")
            .with_row_index("doc")
            .with_columns(pl.col("doc").cast(pl.Int64))
        )
        chosen = (
            pl.from_arrow(doclist.select(["source", "doc"]))
            .with_row_index("pos")
            .filter(pl.col("source") == s)
            .drop("source")
        )
        frames.append(
            chosen.lazy()
            .join(docs, on="doc", how="left")
            .with_columns(pl.lit(code, dtype=pl.Int32).alias("src"))
            .collect()
        )
    table = pl.concat(frames).sort("pos") if frames else None
    n = 0 if table is None else table.height
    if table is not None and table["tokens"].null_count():
        raise ValueError(f"blend {blend_dir}: document rows beyond their source's tokens/docs.parquet")
    order = np.arange(n)
    if shuffle_buffer > 0 and n:
        order = np.random.default_rng(seed).permutation(n)
    shards: dict[tuple[int, int], np.ndarray] = {}
    masks: dict[tuple[int, int], np.ndarray | None] = {}

    def shard(src: int, part: int) -> tuple[np.ndarray, np.ndarray | None]:
        key = (src, part)
        if key not in shards:
            base = Path(tokens_dirs[names[src]])
            shards[key] = np.load(base / tokens_file(part), mmap_mode="r")
            m = base / mask_file(part)
            masks[key] = np.load(m, mmap_mode="r") if loss_mask and m.exists() else None
        return shards[key], masks[key]

    head = np.asarray([meta.bos_id], dtype=dtype)
    tail = np.asarray([meta.eos_id], dtype=dtype)
    with atomic_dir(out_dir) as tmp:
        writers = {
            s: _SplitWriter(tmp, s, seq_len + 1, rows_per_shard, dtype, meta.pad_id, loss_mask)
            for s in SPLITS
        }
        sources: dict[str, dict[str, int]] = {}
        if n:
            cols = {c: table[c].to_numpy() for c in ("src", "part", "offset", "tokens", "masked", "bucket")}
            val = cols["bucket"] < val_fraction * BUCKETS
            for start in range(0, n, chunk_docs):
                for i in order[start : start + chunk_docs]:
                    src, part = int(cols["src"][i]), int(cols["part"][i])
                    off, length = int(cols["offset"][i]), int(cols["tokens"][i])
                    ids, mask = shard(src, part)
                    body = np.asarray(ids[off : off + length], dtype=dtype)
                    seq = np.concatenate([head, body, tail] if boundary == 2 else [body, tail])
                    doc_mask = None
                    if loss_mask:
                        inner = (
                            np.asarray(mask[off : off + length], dtype=np.uint8)
                            if mask is not None and cols["masked"][i]
                            else np.ones(length, dtype=np.uint8)
                        )
                        first = (
                            [np.asarray([0 if cols["masked"][i] else 1], dtype=np.uint8)]
                            if boundary == 2
                            else []
                        )
                        doc_mask = np.concatenate([*first, inner, np.ones(1, dtype=np.uint8)])
                    name = names[src]
                    writers["val" if val[i] else "train"].add(seq, name, doc_mask)
                    acc = sources.setdefault(name, {"docs": 0, "tokens": 0})
                    acc["docs"] += 1
                    acc["tokens"] += len(seq)
        splits = {}
        for s in SPLITS:
            res = writers[s].close()
            res["sources"] = dict(sorted(res["sources"].items()))
            splits[s] = res
        index = {
            "seq_len": seq_len,
            "row_len": seq_len + 1,
            "dtype": dtype.name,
            "vocab_size": meta.vocab_size,
            "bos_id": meta.bos_id,
            "eos_id": meta.eos_id,
            "pad_id": meta.pad_id,
            "model_pad_id": meta.model_pad_id,
            "boundary_tokens": boundary,
            "val_fraction": val_fraction,
            "shuffle_buffer": shuffle_buffer,
            "seed": seed,
            "loss_mask": loss_mask,
            "tokens": sum(s["tokens"] for s in splits.values()),
            "splits": splits,
            "sources": dict(sorted(sources.items())),
        }
        write_json(tmp / INDEX_FILE, index)
    return PackResult(**index)
