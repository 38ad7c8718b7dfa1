"""Read a recipe source into documents of the fixed schema, streaming, with bad records quarantined.

Formats: JSONL (plain or .gz), Parquet, directories of .txt files, and HF `datasets` (streaming for hub
ids; local files go through the same call). A malformed record never stops the read: it is counted and
kept in `ReadStats.quarantined` with its file, line and reason.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from lm_platform.data.documents import Document, make_doc
from lm_platform.recipe.schema import SourceConfig

MAX_QUARANTINE_KEPT = 1000


@dataclass
class ReadStats:
    read: int = 0
    quarantined_count: int = 0
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    def quarantine(self, file: str, line: int | None, reason: str) -> None:
        self.quarantined_count += 1
        if len(self.quarantined) < MAX_QUARANTINE_KEPT:
            self.quarantined.append({"file": file, "line": line, "reason": reason})


def format_record(record: dict[str, Any], src: SourceConfig) -> str | None:
    """The document text of a record, through the source's formatter if it has one."""
    if src.formatter == "qa":
        parts = [record.get("title"), record.get("question")]
        answers = record.get("answers") or []
        parts += [f"Answer: {a}" for a in (answers if isinstance(answers, list) else [answers])]
        text = "\n\n".join(str(p) for p in parts if p)
        return text or None
    value = record.get(src.text_field)
    return value if isinstance(value, str) else None


def _to_doc(
    record: dict[str, Any], src: SourceConfig, file: str, line: int | None, stats: ReadStats
) -> Document | None:
    text = format_record(record, src)
    if text is None:
        stats.quarantine(file, line, f"no string field '{src.text_field}'")
        return None
    raw_id = record.get(src.id_field) if src.id_field else None
    doc_id = str(raw_id) if raw_id is not None else hashlib.sha1(f"{file}:{line}".encode()).hexdigest()[:16]
    meta = {k: v for k, v in record.items() if k not in {src.text_field, src.id_field, src.url_field}}
    if "meta" in record and isinstance(record["meta"], dict):
        meta = {**{k: v for k, v in meta.items() if k != "meta"}, **record["meta"]}
    url = record.get(src.url_field) if src.url_field else None
    stats.read += 1
    return make_doc(f"{src.name}/{doc_id}", text, src.name, src.license, src.language, url, _jsonable(meta))


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(meta, default=str))


def _files(location: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if location.is_file():
        return [location]
    if location.is_dir():
        return sorted(p for p in location.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    raise FileNotFoundError(f"source location not found: {location}")


def _read_jsonl(src: SourceConfig, stats: ReadStats) -> Iterator[Document]:
    for path in _files(Path(src.location), (".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as raw:
            for lineno, line in enumerate(io.BufferedReader(raw), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    stats.quarantine(str(path), lineno, f"invalid UTF-8: {exc.reason}")
                    continue
                except json.JSONDecodeError as exc:
                    stats.quarantine(str(path), lineno, f"malformed JSON: {exc.msg}")
                    continue
                if not isinstance(record, dict):
                    stats.quarantine(str(path), lineno, "record is not a JSON object")
                    continue
                doc = _to_doc(record, src, str(path), lineno, stats)
                if doc is not None:
                    yield doc


def _read_parquet(src: SourceConfig, stats: ReadStats) -> Iterator[Document]:
    for path in _files(Path(src.location), (".parquet",)):
        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                doc = _to_doc(record, src, str(path), row, stats)
                if doc is not None:
                    yield doc


def _read_text_dir(src: SourceConfig, stats: ReadStats) -> Iterator[Document]:
    root = Path(src.location)
    for path in _files(root, (".txt",)):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            stats.quarantine(str(path), None, f"invalid UTF-8: {exc.reason}")
            continue
        rel = str(path.relative_to(root)) if root.is_dir() else path.name
        doc = _to_doc({"text": text, "id": rel, "path": rel}, _as_plain(src), str(path), None, stats)
        if doc is not None:
            yield doc


def _as_plain(src: SourceConfig) -> SourceConfig:
    return src.model_copy(update={"text_field": "text", "id_field": "id", "formatter": None})


def _read_hf(src: SourceConfig, stats: ReadStats) -> Iterator[Document]:
    import datasets  # heavy; only sources of this format pay for it

    location = Path(src.location)
    if location.exists():  # local files in a hub dataset's formats, through the same loader
        files = [str(p) for p in _files(location, (".parquet", ".jsonl", ".json"))]
        builder = "parquet" if files[0].endswith(".parquet") else "json"
        ds = datasets.load_dataset(builder, data_files=files, split=src.hf_split, streaming=True)
    else:
        ds = datasets.load_dataset(src.location, src.hf_config, split=src.hf_split, streaming=True)
    for row, record in enumerate(ds, start=1):
        doc = _to_doc(dict(record), src, src.location, row, stats)
        if doc is not None:
            yield doc


READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "text_dir": _read_text_dir, "hf": _read_hf}


def read_source(src: SourceConfig, stats: ReadStats | None = None) -> Iterator[Document]:
    """Stream a source's documents (up to `max_docs`), counting bad records into `stats`."""
    stats = stats if stats is not None else ReadStats()
    for n, doc in enumerate(READERS[src.format](src, stats)):
        if src.max_docs is not None and n >= src.max_docs:
            return
        yield doc
