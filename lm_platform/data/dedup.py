"""Exact deduplication on a normalised key, within a source and against higher-priority sources.

The key ignores case, punctuation, symbols and whitespace, so copies that differ only in those (or in
Unicode form, which curation already unified) count as the same document. The first copy in reading
order is kept; a copy already kept by a higher-priority source is dropped as a cross-source hit.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lm_platform.data.documents import DocWriter, iter_docs


def dedup_key(text: str) -> bytes:
    """A 16-byte hash of the text with case, punctuation, symbols and whitespace removed."""
    kept = "".join(c for c in text.casefold() if unicodedata.category(c)[0] in "LNM")
    return hashlib.blake2b(kept.encode("utf-8"), digest_size=16).digest()


@dataclass
class DedupResult:
    docs_in: int
    docs_out: int
    exact_removed: int
    cross_source_removed: int
    cross_source_hits: dict[str, int]
    chars_out: int
    licenses: dict[str, int]


def dedup_exact(
    in_path: str | Path, out_path: str | Path, higher_priority: Iterable[tuple[str, str | Path]] = ()
) -> DedupResult:
    """Drop exact (normalised) duplicates from `in_path`, and documents already present in any of the
    `higher_priority` (source name, curated path) inputs."""
    seen_elsewhere: dict[bytes, str] = {}
    for name, path in higher_priority:
        for doc in iter_docs(path, columns=["text"]):
            seen_elsewhere.setdefault(dedup_key(doc["text"]), name)
    seen: set[bytes] = set()
    docs_in = exact = cross = chars = 0
    hits: dict[str, int] = {}
    licenses: dict[str, int] = {}
    with DocWriter(out_path) as out:
        for doc in iter_docs(in_path):
            docs_in += 1
            key = dedup_key(doc["text"])
            if key in seen_elsewhere:
                cross += 1
                hits[seen_elsewhere[key]] = hits.get(seen_elsewhere[key], 0) + 1
                continue
            if key in seen:
                exact += 1
                continue
            seen.add(key)
            out.write(doc)
            chars += len(doc["text"])
            licenses[doc["license"]] = licenses.get(doc["license"], 0) + 1
    return DedupResult(docs_in, out.count, exact, cross, hits, chars, licenses)
