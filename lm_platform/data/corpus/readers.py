"""Read a recipe source into documents of the fixed schema, streaming, with bad records quarantined.

Formats: JSONL (plain, .gz or .zst), Parquet, directories of .txt files, directories of PDFs (text from
pypdf), and HF `datasets` (streaming for hub ids; local files go through the same call). Text and PDF
directories may carry a sidecar license manifest (JSON `{file: SPDX}` or CSV `file,license`), giving
each file its own license. A bad record never stops the read: malformed JSON, invalid UTF-8, a record
without the text field, an empty file, a document over `max_doc_bytes` are counted and kept in
`ReadStats.quarantined` with file, line and reason; so are strings that cannot be written as UTF-8
(a JSON lone surrogate such as `\\ud800`), and a truncated or corrupt compressed file is quarantined
from the line it broke on while the read goes on with the next file. Memory stays bounded: JSONL is read line by line
with a length limit, so even a single huge line is skipped without being held.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import zstandard

from lm_platform.data.corpus.documents import Document, make_doc
from lm_platform.recipe.licenses import load_license_manifest
from lm_platform.recipe.schema import EvalConfig, SourceConfig

MAX_QUARANTINE_KEPT = 1000


@dataclass
class ReadStats:
    read: int = 0
    quarantined_count: int = 0
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    by_reason: Counter = field(default_factory=Counter)
    files: int = 0

    def quarantine(self, file: str, line: int | None, reason: str) -> None:
        self.quarantined_count += 1
        self.by_reason[reason.split(":")[0]] += 1
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
    record: dict[str, Any],
    src: SourceConfig,
    file: str,
    line: int | None,
    stats: ReadStats,
    license: str | None = None,
) -> Document | None:
    text = format_record(record, src)
    if text is None:
        stats.quarantine(file, line, f"no string field '{src.text_field}'")
        return None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate (JSON "\ud800") cannot be written as UTF-8
        stats.quarantine(file, line, f"invalid Unicode: lone surrogate {_codepoint(text, exc)} in the text")
        return None
    if size > src.max_doc_bytes:
        stats.quarantine(
            file, line, f"document too large: {size:,} bytes > max_doc_bytes {src.max_doc_bytes:,}"
        )
        return None
    raw_id = record.get(src.id_field) if src.id_field else None
    doc_id = str(raw_id) if raw_id is not None else hashlib.sha1(f"{file}:{line}".encode()).hexdigest()[:16]
    meta = {k: v for k, v in record.items() if k not in {src.text_field, src.id_field, src.url_field}}
    if "meta" in record and isinstance(record["meta"], dict):
        meta = {**{k: v for k, v in meta.items() if k != "meta"}, **record["meta"]}
    url = record.get(src.url_field) if src.url_field else None
    lic = license or src.license
    doc = make_doc(f"{src.name}/{doc_id}", text, src.name, lic, src.language, url, _jsonable(meta))
    for key in ("id", "url", "meta"):
        value = doc[key]
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                stats.quarantine(
                    file, line, f"invalid Unicode: lone surrogate {_codepoint(value, exc)} in {key}"
                )
                return None
    stats.read += 1
    return doc


def _codepoint(text: str, exc: UnicodeEncodeError) -> str:
    return f"U+{ord(text[exc.start]):04X} at character {exc.start}"


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(meta, default=str))


def _files(location: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if location.is_file():
        return [location]
    if location.is_dir():
        return sorted(p for p in location.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    raise FileNotFoundError(f"source location not found: {location}")


def _open_binary(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.name.endswith(".zst"):
        return zstandard.open(path, "rb")
    return open(path, "rb")


def _bounded_lines(raw, limit: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line bytes or None when longer than `limit`, size): a huge line is skipped in
    chunks, never held whole."""
    stream = io.BufferedReader(raw) if not isinstance(raw, io.BufferedReader) else raw
    lineno = 0
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        lineno += 1
        if len(chunk) <= limit or chunk.endswith(b"\n"):
            yield lineno, chunk, len(chunk)
            continue
        size = len(chunk)
        while chunk and not chunk.endswith(b"\n"):
            chunk = stream.readline(1 << 20)
            size += len(chunk)
        yield lineno, None, size


def _decompression_errors() -> tuple[type[BaseException], ...]:
    """What a truncated or corrupt compressed file raises while it is read."""
    return (EOFError, OSError, zlib.error, zstandard.ZstdError)


def _read_jsonl(src: SourceConfig, stats: ReadStats) -> Iterator[Document]:
    suffixes = tuple(f"{ext}{comp}" for ext in (".jsonl", ".json") for comp in ("", ".gz", ".zst"))
    # A record's JSON can be longer than its text (escapes, other fields): allow some room.
    limit = src.max_doc_bytes * 2 + 65536
    broken = _decompression_errors()
    for path in _files(Path(src.location), suffixes):
        stats.files += 1
        progress = {"line": 0, "records": 0}
        try:
            yield from _jsonl_file(src, stats, path, limit, progress)
        except broken as exc:
            # A truncated or corrupt file (a .gz cut short): the documents before it stay, the rest of
            # the file is quarantined from the line it broke on, and the read goes on with the next file.
            stats.quarantine(
                str(path),
                progress["line"] + 1,
                f"unreadable file from this line on: {type(exc).__name__}: {exc}",
            )
            continue
        if progress["records"] == 0:
            stats.quarantine(str(path), None, "empty file: no records")


def _jsonl_file(
    src: SourceConfig, stats: ReadStats, path: Path, limit: int, progress: dict[str, int]
) -> Iterator[Document]:
    """Documents of one JSONL file; `progress` holds the last line read and the records seen."""
    with _open_binary(path) as raw:
        for lineno, line, size in _bounded_lines(raw, limit):
            progress["line"] = lineno
            if line is None:
                stats.quarantine(str(path), lineno, f"document too large: line of {size:,} bytes")
                progress["records"] += 1
                continue
            if not line.strip():
                continue
            progress["records"] += 1
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                stats.quarantine(str(path), lineno, f"invalid UTF-8: {exc.reason} at byte {exc.start}")
                continue
            except json.JSONDecodeError as exc:
                stats.quarantine(str(path), lineno, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(record, dict):
                stats.quarantine(str(path), lineno, "record is not a JSON object")
                continue
            doc = _to_doc(record, src, str(path), lineno, stats)
            if doc is not None:
                yield doc


def _read_parquet(src: SourceConfig, stats: ReadStats) -> Iterator[Document]:
    for path in _files(Path(src.location), (".parquet",)):
        stats.files += 1
        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                doc = _to_doc(record, src, str(path), row, stats)
                if doc is not None:
                    yield doc
        if row == 0:
            stats.quarantine(str(path), None, "empty file: no rows")


def _licensed_files(src: SourceConfig, suffixes: tuple[str, ...], stats: ReadStats):
    """(path, relative name, license) for each file of a directory source; files the manifest does not
    cover are quarantined (a document without a known license must not reach a blend)."""
    root = Path(src.location)
    manifest = load_license_manifest(src.license_manifest) if src.license_manifest else None
    for path in _files(root, suffixes):
        stats.files += 1
        rel = str(path.relative_to(root)) if root.is_dir() else path.name
        lic = src.license
        if manifest is not None:
            lic = manifest.get(rel) or manifest.get(path.name)
            if lic is None:
                stats.quarantine(str(path), None, "no license: file not in the license manifest")
                continue
        size = path.stat().st_size
        if size == 0:
            stats.quarantine(str(path), None, "empty file")
            continue
        yield path, rel, lic, size


def _read_text_dir(src: SourceConfig, stats: ReadStats) -> Iterator[Document]:
    plain = _as_plain(src)
    for path, rel, lic, size in _licensed_files(src, (".txt",), stats):
        if size > src.max_doc_bytes:
            stats.quarantine(str(path), None, f"document too large: {size:,} bytes > max_doc_bytes")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            stats.quarantine(str(path), None, f"invalid UTF-8: {exc.reason} at byte {exc.start}")
            continue
        doc = _to_doc({"text": text, "id": rel, "path": rel}, plain, str(path), None, stats, lic)
        if doc is not None:
            yield doc


def _read_pdf_dir(src: SourceConfig, stats: ReadStats) -> Iterator[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    plain = _as_plain(src)
    for path, rel, lic, _ in _licensed_files(src, (".pdf",), stats):
        try:
            reader = PdfReader(path)
            pages = [page.extract_text() or "" for page in reader.pages]
        except (PdfReadError, ValueError, KeyError, OSError) as exc:
            stats.quarantine(str(path), None, f"unreadable PDF: {exc}")
            continue
        text = "\n\n".join(p.strip() for p in pages if p.strip())
        if not text:
            stats.quarantine(str(path), None, "empty file: no extractable text (scanned PDF?)")
            continue
        record = {"text": text, "id": rel, "path": rel, "pages": len(pages)}
        doc = _to_doc(record, plain, str(path), None, stats, lic)
        if doc is not None:
            yield doc


def _as_plain(src: SourceConfig) -> SourceConfig:
    return src.model_copy(update={"text_field": "text", "id_field": "id", "formatter": None})


def hf_records(location: str, hf_config: str | None, split: str) -> Iterator[dict[str, Any]]:
    """Records of a `datasets` dataset: streamed from the hub for an id, or from local Parquet/JSON(L)
    files (a file or a directory) through the same loader. Sources and evaluation sets both read here."""
    import datasets  # heavy; only sources of this format pay for it

    local = Path(location)
    if local.exists():  # local files in a hub dataset's formats, through the same loader
        files = [str(p) for p in _files(local, (".parquet", ".jsonl", ".json"))]
        if not files:
            raise FileNotFoundError(f"{location}: no .parquet, .jsonl or .json files")
        builder = "parquet" if files[0].endswith(".parquet") else "json"
        ds = datasets.load_dataset(builder, data_files={split: files}, split=split, streaming=True)
    else:
        ds = datasets.load_dataset(location, hf_config, split=split, streaming=True)
    for record in ds:
        yield dict(record)


def _read_hf(src: SourceConfig, stats: ReadStats) -> Iterator[Document]:
    for row, record in enumerate(hf_records(src.location, src.hf_config, src.hf_split), start=1):
        doc = _to_doc(record, src, src.location, row, stats)
        if doc is not None:
            yield doc


def read_eval_set(
    ev: EvalConfig, max_docs: int | None = None, limit: bool = True
) -> Iterator[tuple[str, str]]:
    """(lang, text) pairs of an evaluation set: a JSONL file, or (format `hf`) a dataset read through the
    same `datasets` path as sources. At most `max_docs` (default the set's `max_docs`; `limit=False`:
    every document, as decontamination needs). A record without a string text or language fails with
    its place."""
    max_docs = max_docs if max_docs is not None else (ev.max_docs if limit else None)
    if ev.format == "hf":
        rows: Iterator[tuple[int, dict[str, Any]]] = enumerate(
            hf_records(ev.location, ev.hf_config, ev.hf_split), start=1
        )
    else:
        rows = _eval_jsonl_rows(ev.location)
    for n, (row, rec) in enumerate(rows, start=1):
        text = rec.get(ev.text_field)
        lang = rec.get(ev.lang_field, ev.language)
        if not isinstance(text, str) or not isinstance(lang, str):
            raise ValueError(
                f"{ev.location}:{row}: evaluation '{ev.name}' needs a string '{ev.text_field}' and a language "
                f"('{ev.lang_field}' in the record or the evaluation's 'language')"
            )
        yield lang, text
        if max_docs is not None and n >= max_docs:
            return


def _eval_jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}:{lineno}: malformed JSON: {exc.msg} at column {exc.colno}"
                ) from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: an evaluation record is a JSON object")
            yield lineno, rec


READERS = {
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "text_dir": _read_text_dir,
    "pdf_dir": _read_pdf_dir,
    "hf": _read_hf,
}


def read_source(
    src: SourceConfig, stats: ReadStats | None = None, chars_per_token: float = 4.0
) -> Iterator[Document]:
    """Stream a source's documents up to its caps (`max_docs`, `max_est_tokens` at `chars_per_token`),
    counting bad records into `stats`."""
    stats = stats if stats is not None else ReadStats()
    chars = 0
    for n, doc in enumerate(READERS[src.format](src, stats)):
        if src.max_docs is not None and n >= src.max_docs:
            return
        if src.max_est_tokens is not None and chars / chars_per_token >= src.max_est_tokens:
            return
        chars += len(doc["text"])
        yield doc
