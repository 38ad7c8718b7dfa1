"""Tokenize one source's deduplicated documents once, with the final tokenizer, into token shards.

Every stage that draws on the source then selects documents by their exact token counts (`blend.py`)
and assembles its sequences from these shards (`pack.py`) without tokenizing again.

Layout of `tokens/<source>/`:

- `tokens_NNNNN.npy`: the ids of a part's documents, concatenated (1-D, uint16 when every id fits, else
  uint32), without BOS/EOS. Parts are fixed runs of the input's Parquet row groups (about
  `PART_ROWS` documents each), so the files depend on the input only, never on the number of workers.
- `mask_NNNNN.npy`: only for parts holding documents whose meta has `loss_spans` ([[start, end), ...]
  in characters): uint8 per token, 1 = train on it (tokens overlapping a span, `span_mask`), aligned with the
  part's tokens file.
- `docs.parquet`: one row per document, in input order: `doc` (row in the input), `id`, `license`,
  `lang`, `part`, `offset` (first token in the part's file), `tokens`, `chars`, `masked` (has a loss
  mask), `bucket` (the id's hash bucket in [0, 1e6), which decides train/val in every stage).
- `summary.json`: the tokenizer's hash and ids, exact documents/tokens per license and language.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lm_platform.atomic import atomic_dir, read_json, write_json

DOCS_FILE = "docs.parquet"
SUMMARY_FILE = "summary.json"
PART_ROWS = 65_536  # documents per part (whole row groups); fixes the shard files, not the workers
BATCH_DOCS = 1024
BUCKETS = 1_000_000

DOCS_SCHEMA = pa.schema(
    [
        ("doc", pa.int64()),
        ("id", pa.string()),
        ("license", pa.string()),
        ("lang", pa.string()),
        ("part", pa.int32()),
        ("offset", pa.int64()),
        ("tokens", pa.int64()),
        ("chars", pa.int64()),
        ("masked", pa.bool_()),
        ("bucket", pa.int32()),
    ]
)


def id_bucket(doc_id: str) -> int:
    """The document id's hash bucket in [0, 1e6): a document is held out when its bucket is below
    `val_fraction * 1e6` (stable across runs and stages, independent of order)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") % BUCKETS


def tokens_file(part: int) -> str:
    return f"tokens_{part:05d}.npy"


def mask_file(part: int) -> str:
    return f"mask_{part:05d}.npy"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TokenizerIds:
    """What packing needs to know about the tokenizer the shards were made with."""

    file_sha256: str
    vocab_size: int
    dtype: str


def tokenizer_ids(tokenizer_dir: str | Path) -> TokenizerIds:
    from tokenizers import Tokenizer

    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.exists():
        raise ValueError(
            f"tokenizer {tokenizer_dir}: no tokenizer.json (tokenization needs a fast HF tokenizer)"
        )
    vocab = Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    return TokenizerIds(file_sha256(path), vocab, _dtype(vocab).name)


def _dtype(vocab_size: int) -> np.dtype:
    # Same rule as packing: ids and the padding id (vocab_size) fit.
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def plan_parts(path: str | Path, part_rows: int = PART_ROWS) -> list[tuple[int, ...]]:
    """Runs of whole row groups of about `part_rows` documents (at least one group each)."""
    md = pq.ParquetFile(path).metadata
    parts: list[tuple[int, ...]] = []
    current: list[int] = []
    rows = 0
    for g in range(md.num_row_groups):
        current.append(g)
        rows += md.row_group(g).num_rows
        if rows >= part_rows:
            parts.append(tuple(current))
            current, rows = [], 0
    if current or not parts:
        parts.append(tuple(current))
    return parts


@dataclass(frozen=True)
class _Job:
    input: str
    tokenizer_file: str
    out_dir: str
    part: int
    row_groups: tuple[int, ...]
    first_row: int
    dtype: str
    batch_docs: int


def span_mask(spans, offsets: list[tuple[int, int]], doc_id: str) -> np.ndarray:
    """1 for each token whose characters overlap a loss span ([start, end) in characters), else 0.

    Overlap, not "starts inside": a byte-level token carries the space before a word ("Ġanswer" starts
    at the space), so the span's first token begins one character before the span and would otherwise
    never train. A token with no characters of its own (a byte-fallback piece sharing its character's
    offsets) trains when its position lies inside a span."""
    try:
        bounds = [(int(a), int(b)) for a, b in spans]
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"document {doc_id}: meta.loss_spans must be [[start, end], ...], got {spans!r}"
        ) from exc
    starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    ends = np.fromiter((o[1] for o in offsets), dtype=np.int64, count=len(offsets))
    inside = np.zeros(len(offsets), dtype=bool)
    for a, b in bounds:
        inside |= (starts < b) & ((ends > a) | ((ends == starts) & (starts >= a)))
    return inside.astype(np.uint8)


def _tokenize_part(job: _Job) -> pa.Table:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(job.tokenizer_file)
    dtype = np.dtype(job.dtype)
    pf = pq.ParquetFile(job.input)
    columns = ["id", "text", "license", "lang", "meta"]
    chunks: list[np.ndarray] = []
    masks: list[tuple[int, np.ndarray]] = []  # (token offset, mask) of masked documents
    cols: dict[str, list] = {k: [] for k in DOCS_SCHEMA.names}
    offset = 0
    row = job.first_row
    if job.row_groups:
        batches = pf.iter_batches(batch_size=job.batch_docs, row_groups=list(job.row_groups), columns=columns)
    else:
        batches = iter(())
    for batch in batches:
        d = batch.to_pydict()
        texts = d["text"]
        spans = []
        for meta in d["meta"]:
            spans.append(json.loads(meta).get("loss_spans") if meta and "loss_spans" in meta else None)
        plain = [i for i, s in enumerate(spans) if s is None]
        ids: list = [None] * len(texts)
        for i, enc in zip(
            plain, tok.encode_batch_fast([texts[i] for i in plain], add_special_tokens=False), strict=True
        ):
            ids[i] = enc.ids
        with_spans = [i for i, s in enumerate(spans) if s is not None]
        batch_masks: dict[int, np.ndarray] = {}
        if with_spans:
            for i, enc in zip(
                with_spans,
                tok.encode_batch([texts[i] for i in with_spans], add_special_tokens=False),
                strict=True,
            ):
                ids[i] = enc.ids
                batch_masks[i] = span_mask(spans[i], enc.offsets, d["id"][i])
        for i, doc_ids in enumerate(ids):
            arr = np.asarray(doc_ids, dtype=dtype)
            if i in batch_masks:
                masks.append((offset, batch_masks[i]))
            chunks.append(arr)
            cols["doc"].append(row)
            cols["id"].append(d["id"][i])
            cols["license"].append(d["license"][i])
            cols["lang"].append(d["lang"][i])
            cols["part"].append(job.part)
            cols["offset"].append(offset)
            cols["tokens"].append(len(arr))
            cols["chars"].append(len(texts[i]))
            cols["masked"].append(spans[i] is not None)
            cols["bucket"].append(id_bucket(d["id"][i]))
            offset += len(arr)
            row += 1
    out = Path(job.out_dir)
    flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
    np.save(out / tokens_file(job.part), flat)
    if masks:
        mask = np.ones(len(flat), dtype=np.uint8)
        for start, m in masks:
            mask[start : start + len(m)] = m
        np.save(out / mask_file(job.part), mask)
    return pa.table(cols, schema=DOCS_SCHEMA)


def _worker_init() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def tokenize_source(
    input_path: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    source: str = "",
    workers: int = 1,
    part_rows: int = PART_ROWS,
    batch_docs: int = BATCH_DOCS,
) -> dict:
    """Tokenize every document of `input_path` (the document schema) once with the HF tokenizer at
    `tokenizer_dir` into `out_dir` (atomically), parts in parallel over `workers` processes.

    Returns the summary (also written as `summary.json`): exact documents and tokens (without BOS/EOS)
    in total, per license and per language. The output is the same for any number of workers."""
    input_path, tokenizer_dir = Path(input_path), Path(tokenizer_dir)
    tid = tokenizer_ids(tokenizer_dir)
    parts = plan_parts(input_path, part_rows)
    md = pq.ParquetFile(input_path).metadata
    starts = [sum(md.row_group(g).num_rows for g in range(p[0])) if p else 0 for p in parts]
    with atomic_dir(out_dir) as tmp:
        jobs = [
            _Job(
                str(input_path),
                str(tokenizer_dir / "tokenizer.json"),
                str(tmp),
                i,
                p,
                starts[i],
                tid.dtype,
                batch_docs,
            )
            for i, p in enumerate(parts)
        ]
        workers = max(1, min(workers, len(jobs)))
        if workers == 1:
            tables = [_tokenize_part(j) for j in jobs]
        else:
            with ProcessPoolExecutor(
                workers, mp_context=get_context("spawn"), initializer=_worker_init
            ) as pool:
                tables = list(pool.map(_tokenize_part, jobs))
        docs = pa.concat_tables(tables)
        pq.write_table(docs, tmp / DOCS_FILE, compression="zstd")
        summary = {
            "source": source,
            "tokenizer_sha256": tid.file_sha256,
            "vocab_size": tid.vocab_size,
            "dtype": tid.dtype,
            "parts": len(parts),
            **_counts(docs),
        }
        write_json(tmp / SUMMARY_FILE, summary)
    return summary


def _counts(docs: pa.Table) -> dict:
    import polars as pl

    df = pl.from_arrow(docs.select(["license", "lang", "tokens", "chars"]))
    assert isinstance(df, pl.DataFrame)

    def by(col: str) -> dict[str, dict[str, int]]:
        g = (
            df.group_by(col)
            .agg(pl.len().alias("docs"), pl.col("tokens").sum(), pl.col("chars").sum())
            .sort(col)
        )
        return {
            r[col]: {"docs": r["docs"], "tokens": r["tokens"], "chars": r["chars"]}
            for r in g.iter_rows(named=True)
        }

    return {
        "docs": df.height,
        "tokens": int(df["tokens"].sum() or 0),
        "chars": int(df["chars"].sum() or 0),
        "licenses": by("license"),
        "languages": by("lang"),
    }


def read_summary(tokens_dir: str | Path) -> dict:
    path = Path(tokens_dir) / SUMMARY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{tokens_dir}: no {SUMMARY_FILE} (materialize tokens/<source> first)")
    return read_json(path)


def check_tokenizer(tokens_dir: str | Path, tokenizer_dir: str | Path) -> dict:
    """The summary of `tokens_dir`, after checking it was made with the tokenizer at `tokenizer_dir`."""
    summary = read_summary(tokens_dir)
    actual = file_sha256(Path(tokenizer_dir) / "tokenizer.json")
    if summary["tokenizer_sha256"] != actual:
        raise ValueError(
            f"{tokens_dir} was tokenized with another tokenizer (tokenizer.json sha256 "
            f"{summary['tokenizer_sha256'][:12]}, {tokenizer_dir} has {actual[:12]}); rematerialize tokens/"
        )
    return summary
