"""Documents on disk: Parquet (zstd) with one fixed schema, written in batches and atomically.

Schema: id, text, source, license, lang, url (nullable), meta (a JSON object as a string), perplexity
(nullable: the KenLM score that curation's perplexity filter gives a document), quality (nullable: the
quality model's score, for sources that declare `quality`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lm_platform.atomic import atomic_path

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("license", pa.string()),
        ("lang", pa.string()),
        ("url", pa.string()),
        ("meta", pa.string()),
        ("perplexity", pa.float64()),
        ("quality", pa.float64()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
Document = dict[str, Any]


def make_doc(
    id: str, text: str, source: str, license: str, lang: str, url: str | None = None, meta: dict | None = None
) -> Document:
    return {
        "id": id,
        "text": text,
        "source": source,
        "license": license,
        "lang": lang,
        "url": url,
        "meta": json.dumps(meta or {}, ensure_ascii=False, sort_keys=True),
    }


def doc_meta(doc: Document) -> dict[str, Any]:
    return json.loads(doc["meta"]) if doc.get("meta") else {}


class DocWriter:
    """Write documents to Parquet in batches; the file appears at `path` only on a clean close."""

    def __init__(self, path: str | Path, schema: pa.Schema = SCHEMA, batch_size: int = 2048):
        self.path = Path(path)
        self.schema = schema
        self.batch_size = batch_size
        self.count = 0
        self._buffer: list[dict[str, Any]] = []
        self._ctx = atomic_path(self.path)
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> DocWriter:
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        return self

    def write(self, doc: dict[str, Any]) -> None:
        self._buffer.append(doc)
        self.count += 1
        if len(self._buffer) >= self.batch_size:
            self._flush()

    def write_all(self, docs: Iterable[dict[str, Any]]) -> None:
        for doc in docs:
            self.write(doc)

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self._buffer = []

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._flush()
        finally:
            if self._writer is not None:
                self._writer.close()
            self._ctx.__exit__(exc_type, exc, tb)


def iter_docs(
    path: str | Path, columns: Iterable[str] | None = None, batch_size: int = 2048
) -> Iterator[Document]:
    """Stream documents from a Parquet file, or from a directory's Parquet files in name order (a sharded
    corpus), with bounded memory."""
    path = Path(path)
    for file in sorted(path.glob("*.parquet")) if path.is_dir() else [path]:
        pf = pq.ParquetFile(file)
        for batch in pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None):
            yield from batch.to_pylist()


def count_docs(path: str | Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows
