"""Exact deduplication on a normalised key, within a source and against higher-priority sources.

The key ignores case, punctuation, symbols and whitespace, so copies that differ only in those (or in
Unicode form, which curation already unified) count as the same document. The persistent index
(`data/dedup/dedup_index.py`) decides which copy wins: the one of the highest-priority source, then the first
in reading order; a copy already kept by a higher-priority source is dropped as a cross-source hit.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.data.corpus.documents import DocWriter, iter_docs
from lm_platform.data.dedup.dedup_index import Entry, ExactIndex
from lm_platform.data.dedup.staleness import file_fingerprint
from lm_platform.recipe.schema import ExactDedupConfig, Recipe

STATS_FILE = "stats.json"


class _KeepWordChars(dict):
    """str.translate table that deletes everything but letters, marks and numbers (filled lazily, so
    each distinct character is classified once and the rest runs in C)."""

    def __missing__(self, codepoint: int) -> int | None:
        keep = unicodedata.category(chr(codepoint))[0] in "LNM"
        self[codepoint] = codepoint if keep else None
        return self[codepoint]


_KEEP_WORD_CHARS = _KeepWordChars()


def dedup_key(text: str) -> bytes:
    """A 16-byte hash of the text with case, punctuation, symbols and whitespace removed."""
    kept = text.casefold().translate(_KEEP_WORD_CHARS)
    return hashlib.blake2b(kept.encode("utf-8"), digest_size=16).digest()


def shard_file(directory: str | Path, shard: int) -> Path:
    return Path(directory) / f"{shard:05d}.parquet"


def exact_shards(directory: str | Path) -> list[Path]:
    """The per-shard outputs of `dedup_exact_indexed`, in shard order."""
    return sorted(Path(directory).glob("[0-9]*.parquet"))


@dataclass
class ExactResult:
    source: str
    shards: int = 0
    docs_in: int = 0
    docs_out: int = 0
    exact_removed: int = 0
    cross_source_removed: int = 0
    cross_source_hits: dict[str, int] = field(default_factory=dict)
    chars_out: int = 0
    licenses: dict[str, int] = field(default_factory=dict)
    index_keys: int = 0
    index_reset: bool = False
    reranked: list[str] = field(default_factory=list)


def recipe_ranks(recipe: Recipe) -> dict[str, tuple[int, int]]:
    """Every source of the recipe -> (priority, position in the recipe): the `ranks` of
    `dedup_exact_indexed`, so a change of either is re-ranked in the persistent index."""
    return {s.name: (s.priority, i) for i, s in enumerate(recipe.sources)}


def dedup_exact_indexed(
    shards: Sequence[str | Path],
    out_dir: str | Path,
    source: str,
    index: ExactIndex,
    priority: int = 0,
    source_rank: int = 0,
    batch_docs: int = 10_000,
    on_batch: Callable[[int, int], None] | None = None,
    ranks: dict[str, tuple[int, int]] | None = None,
) -> ExactResult:
    """Exact dedup of one source's curated shards against the persistent `index`.

    Documents are offered to the index batch by batch (one transaction per bucket and batch); a document
    is written to `out_dir/NNNNN.parquet` (one file per input shard) when the index names it the winner
    of its text. `out_dir` appears as a whole when every shard is done; `on_batch(shard, docs_done)`
    is called after each committed batch.

    `ranks` (every source of the recipe -> (priority, source order)) lets the index notice a change of
    priority or order and re-rank what it holds (`ExactIndex.sync_ranks`); without it only this source's
    rank is brought up to date. Each shard's fingerprint is recorded before its documents are claimed,
    so a shard that changed after a killed run resets the source's claims."""
    res = ExactResult(source)
    complete = ranks is not None
    ranks = ranks if ranks is not None else {source: (priority, source_rank)}
    if ranks.get(source) != (priority, source_rank):
        raise ValueError(f"ranks[{source!r}] is {ranks.get(source)}, expected {(priority, source_rank)}")
    synced = index.sync_ranks(ranks, complete=complete)
    res.reranked = synced["reranked"]
    prints = {k: file_fingerprint(s) for k, s in enumerate(shards)}
    known = index.shard_fingerprints(source)
    if (
        index.reset_pending(source)
        or any(known.get(k, fp) != fp for k, fp in prints.items())
        or set(known) - set(prints)
    ):
        # The source's input changed since it was indexed: its old claims go before it claims again.
        res.index_reset = True
        index.forget_source(source)
    with atomic_dir(out_dir) as tmp:
        for k, shard in enumerate(shards):
            res.shards += 1
            done = 0
            index.begin_shard(source, k, Path(shard).name, prints[k])
            with DocWriter(shard_file(tmp, k)) as out:
                batch: list[dict] = []

                def flush(batch: list[dict], k: int = k, out: DocWriter = out) -> None:
                    entries = [Entry(dedup_key(d["text"]), d["_row"], d["id"]) for d in batch]
                    owners = index.claim(source, priority, source_rank, k, entries)
                    for d in batch:
                        owner = owners[d["_row"]]
                        if owner.source == source and owner.shard == k and owner.row == d["_row"]:
                            del d["_row"]
                            out.write(d)
                            res.chars_out += len(d["text"])
                            res.licenses[d["license"]] = res.licenses.get(d["license"], 0) + 1
                        elif owner.source == source:
                            res.exact_removed += 1
                        else:
                            res.cross_source_removed += 1
                            res.cross_source_hits[owner.source] = (
                                res.cross_source_hits.get(owner.source, 0) + 1
                            )

                for row, doc in enumerate(iter_docs(shard)):
                    doc["_row"] = row
                    batch.append(doc)
                    if len(batch) >= batch_docs:
                        flush(batch)
                        done += len(batch)
                        batch = []
                        if on_batch:
                            on_batch(k, done)
                if batch:
                    flush(batch)
                    done += len(batch)
                    if on_batch:
                        on_batch(k, done)
            res.docs_in += done
            res.docs_out += out.count
            index.record_shard(source, k, Path(shard).name, done, prints[k])
        res.index_keys = index.stats()["keys"]
        write_json(tmp / STATS_FILE, asdict(res))
    return res


@dataclass(frozen=True)
class Winner:
    """A source whose copy of a shared document wins over the one being deduplicated."""

    name: str
    priority: int
    rank: int


@dataclass(frozen=True)
class ExactStageResult:
    """One source's exact dedup against the index, and the index afterwards."""

    docs_in: int
    docs_out: int
    shards: int
    exact_duplicates_removed: int
    cross_source_removed: int
    cross_source_hits: dict[str, int]
    index: str
    index_keys: int
    index_keys_per_source: dict[str, int]
    index_bytes: int
    index_reset: bool  # the source's input changed: its old claims were dropped first
    reranked: list[str]  # sources re-ranked in the index because the recipe's priorities/order changed
    path: Path


def offer_winners(index: ExactIndex, base: str | Path, winners: Sequence[Winner]) -> None:
    """An index that keeps nothing between runs learns the winners' kept documents (their exact-dedup
    outputs under `base/exact/<name>`) before a lower-priority source claims its own."""
    for w in winners:
        for k, shard in enumerate(exact_shards(Path(base) / "exact" / w.name)):
            entries = [
                Entry(dedup_key(d["text"]), row, d["id"])
                for row, d in enumerate(iter_docs(shard, columns=["id", "text"]))
            ]
            index.claim(w.name, w.priority, w.rank, k, entries)


def exact_dedup_source(
    curated_shards: Sequence[str | Path],
    base: str | Path,
    source: Winner,
    winners: Sequence[Winner],
    cfg: ExactDedupConfig,
    ranks: dict[str, tuple[int, int]] | None = None,
    index_dir: str | Path | None = None,
) -> ExactStageResult:
    """Exact dedup of one source into `base/exact/<source>` against the index in `index_dir` (default
    `base/exact_index`; `cfg.index: sqlite`; `memory`: rebuilt from the winners' outputs each time).
    `ranks` (every source of the recipe, `recipe_ranks`) lets the index re-rank after a change of
    priority or order."""
    base = Path(base)
    directory = Path(index_dir or base / "exact_index") if cfg.index == "sqlite" else None
    out = base / "exact" / source.name
    with ExactIndex(directory, cfg.partitions, cfg.workers) as index:
        if directory is None:
            offer_winners(index, base, winners)
        res = dedup_exact_indexed(
            curated_shards,
            out,
            source.name,
            index,
            priority=source.priority,
            source_rank=source.rank,
            batch_docs=cfg.batch_docs,
            ranks=ranks,
        )
        stats = index.stats()
    return ExactStageResult(
        docs_in=res.docs_in,
        docs_out=res.docs_out,
        shards=res.shards,
        exact_duplicates_removed=res.exact_removed,
        cross_source_removed=res.cross_source_removed,
        cross_source_hits=res.cross_source_hits,
        index=cfg.index,
        index_keys=stats["keys"],
        index_keys_per_source=stats["per_source"],
        index_bytes=stats["bytes"],
        index_reset=res.index_reset,
        reranked=res.reranked,
        path=out,
    )
