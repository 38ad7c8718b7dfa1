"""A seeded, size-capped sample of documents for tokenizer training, read in one streaming pass.

Every document gets a pseudo-random key from the seed, its source name and its id (its position when
it has none); a source keeps the documents with the smallest keys that fit its cap. The sample is
therefore a uniform random one, the same for the same seed and documents whatever order they arrive
in, and memory stays bounded by the cap (plus one document), however large the sources.

Sources are named: `{name: paths_or_iterable}`, where a path is a Parquet document file (the
project's schema: `id`, `text`, ...), a JSONL file or a directory of them, and an iterable yields
documents (dicts with `text` and maybe `id`) or plain strings. With `mixture` ({name: share}), each
source's cap is its share of the total; a source with less text than its share gives what it has.
With `licenses`, a document whose `license` field is not among them never enters the sample (the recipe's
license allowlist: the blends' blocking check stops such text from reaching a dataset, and the tokenizer,
which trains before any blend, must not learn from it either); they are counted as `docs_excluded_license`.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

Source = str | Path | Iterable[Any]


@dataclass
class Sample:
    """The sampled texts (in key order, i.e. shuffled) and, per source, documents/characters seen and taken."""

    texts: list[str] = field(default_factory=list)
    sources: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def chars(self) -> int:
        return sum(s["chars_taken"] for s in self.sources.values())


def _key(seed: int, source: str, doc_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{source}\x00{doc_id}".encode(), digest_size=8).digest()


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in {".parquet", ".jsonl"})
        if not found:
            raise ValueError(f"{path}: no .parquet or .jsonl document files in this directory")
        return found
    if not path.exists():
        raise ValueError(f"{path}: no such document file")
    return [path]


def _iter_file(path: Path) -> Iterator[dict]:
    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        if "text" not in names:
            raise ValueError(f"{path}: a document file needs a 'text' column (has {sorted(names)})")
        columns = [c for c in ("id", "text", "license") if c in names]
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            yield from batch.to_pylist()
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not a JSON document ({exc.msg})") from exc
                if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                    raise ValueError(f"{path}:{n}: a document needs a string 'text' field")
                yield doc
    else:
        raise ValueError(f"{path}: expected a .parquet or .jsonl document file")


def _iter_source(source: Source) -> Iterator[dict]:
    if isinstance(source, str | Path):
        for f in _files(Path(source)):
            yield from _iter_file(f)
        return
    for item in source:
        if isinstance(item, str | Path) and Path(item).suffix in {".parquet", ".jsonl"}:
            for f in _files(Path(item)):
                yield from _iter_file(f)
        elif isinstance(item, str):
            yield {"text": item}
        elif isinstance(item, Mapping):
            yield item  # type: ignore[misc]
        else:
            raise ValueError(f"expected a document dict, a text or a file path, got {type(item).__name__}")


def sample_documents(
    sources: Mapping[str, Source] | Source,
    max_chars: int | None = None,
    max_docs: int | None = None,
    seed: int = 0,
    mixture: Mapping[str, float] | None = None,
    licenses: Iterable[str] | None = None,
) -> Sample:
    """Sample texts from `sources` under `max_chars` characters and `max_docs` documents in all (None:
    no cap of that kind), split between sources by `mixture` shares when given (sources it does not
    name are not read), leaving out documents whose `license` is not in `licenses` (when given).
    Deterministic for a seed; see the module docstring."""
    allowed = None if licenses is None else frozenset(licenses)
    named: dict[str, Source] = dict(sources) if isinstance(sources, Mapping) else {"all": sources}
    if mixture is not None:
        unknown = sorted(set(mixture) - set(named))
        if unknown:
            raise ValueError(
                f"sample.mixture names {unknown}, which are not among the sources {sorted(named)}"
            )
        if any(v < 0 for v in mixture.values()) or sum(mixture.values()) <= 0:
            raise ValueError(
                f"sample.mixture shares must be >= 0 and sum to more than 0, got {dict(mixture)}"
            )
        total = sum(mixture.values())
        shares = {name: mixture[name] / total for name in mixture if mixture[name] > 0}
    else:
        shares = None
    if max_chars is not None and max_chars <= 0 or max_docs is not None and max_docs <= 0:
        raise ValueError(f"sample caps must be positive, got max_chars={max_chars} max_docs={max_docs}")

    def cap(value: int | None, share: float) -> float:
        return float("inf") if value is None else max(1, int(value * share))

    # One group per source with a mixture, else one group for all: (char cap, doc cap, heap, chars)
    groups: dict[str, list] = {}
    stats: dict[str, dict[str, int]] = {}
    order = sorted(shares) if shares is not None else sorted(named)
    for name in order:
        group = name if shares is not None else "*"
        share = shares[name] if shares is not None else 1.0
        groups.setdefault(group, [cap(max_chars, share), cap(max_docs, share), [], 0])
        stats[name] = {
            "docs_seen": 0,
            "chars_seen": 0,
            "docs_taken": 0,
            "chars_taken": 0,
            "docs_excluded_license": 0,
        }
        g = groups[group]
        for n, doc in enumerate(_iter_source(named[name])):
            text = doc.get("text")
            if not isinstance(text, str) or not text:
                continue
            if allowed is not None and doc.get("license") not in allowed:
                stats[name]["docs_excluded_license"] += 1
                continue
            stats[name]["docs_seen"] += 1
            stats[name]["chars_seen"] += len(text)
            key = _key(seed, name, str(doc.get("id", n)))
            heapq.heappush(g[2], (_neg(key), name, text))
            g[3] += len(text)
            while g[2] and (g[3] > g[0] or len(g[2]) > g[1]):
                _, _, dropped = heapq.heappop(g[2])  # the largest key leaves first
                g[3] -= len(dropped)
    chosen = sorted((_neg(nk), name, text) for g in groups.values() for nk, name, text in g[2])
    sample = Sample(texts=[text for _, _, text in chosen], sources=stats)
    for _, name, text in chosen:
        stats[name]["docs_taken"] += 1
        stats[name]["chars_taken"] += len(text)
    return sample


def _neg(key: bytes) -> bytes:
    """Bytes that sort in the opposite order (heapq is a min-heap; the largest key must leave first)."""
    return bytes(255 - b for b in key)


def sample_texts(
    sources: Mapping[str, Source] | Source,
    max_chars: int | None = None,
    max_docs: int | None = None,
    seed: int = 0,
    mixture: Mapping[str, float] | None = None,
) -> Iterator[str]:
    """The texts of `sample_documents(...)`, in sample order."""
    yield from sample_documents(sources, max_chars, max_docs, seed, mixture).texts
