"""A persistent exact-dedup index: normalised-text hash -> the document that keeps it.

The index is a directory of SQLite files, one per hash-prefix bucket (`partitions`), so buckets can be
updated in parallel and grow independently. Each row records the winning copy of a text: its source,
document id, and its rank `(-priority, source order, shard, row)`. A document is kept when it is the
winner of its hash, so the outcome does not depend on the order in which sources and shards were
indexed: a higher-priority copy indexed later takes the hash over (and the loser's deduped output goes
stale, which the asset graph expresses by making lower-priority sources depend on higher ones).

Transactions: each batch of documents updates each bucket in one SQLite transaction (WAL journal), and
re-indexing a document is a no-op, so a killed run leaves every bucket consistent and a rerun ends in
exactly the state of an uninterrupted run.

State across runs: a shard's fingerprint is recorded as intent before any of its documents is claimed
(`begin_shard`), so a run killed mid-shard followed by a change of that shard is seen as a change (the
source's claims are dropped and made again). The rank of every source (`sync_ranks`) is stored too: when
the recipe changes a source's priority or order, the rows it owns are re-ranked; a source that left the
recipe loses its claims.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lm_platform.atomic import write_json

INDEX_META = "index.json"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    key BLOB PRIMARY KEY,
    neg_priority INTEGER NOT NULL,
    source_rank INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    row INTEGER NOT NULL,
    source TEXT NOT NULL,
    doc_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (
    source TEXT NOT NULL,
    shard INTEGER NOT NULL,
    name TEXT NOT NULL,
    docs INTEGER NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (source, shard)
);
CREATE TABLE IF NOT EXISTS resets (source TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS ranks (
    source TEXT PRIMARY KEY,
    neg_priority INTEGER NOT NULL,
    source_rank INTEGER NOT NULL
);
"""
_UPSERT = """
INSERT INTO seen (key, neg_priority, source_rank, shard, row, source, doc_id) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET
    neg_priority = excluded.neg_priority, source_rank = excluded.source_rank, shard = excluded.shard,
    row = excluded.row, source = excluded.source, doc_id = excluded.doc_id
WHERE (excluded.neg_priority, excluded.source_rank, excluded.shard, excluded.row)
    < (seen.neg_priority, seen.source_rank, seen.shard, seen.row)
"""
_LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class Owner:
    """The copy of a text that the index keeps."""

    source: str
    doc_id: str
    shard: int
    row: int


@dataclass(frozen=True)
class Entry:
    key: bytes
    row: int
    doc_id: str


class ExactIndex:
    """Hash-prefix-partitioned SQLite index. `directory=None` keeps it in memory (nothing persists)."""

    def __init__(self, directory: str | Path | None, partitions: int = 16, workers: int = 1):
        if not 1 <= partitions <= 256:
            raise ValueError(f"partitions must be within 1..256, got {partitions}")
        self.directory = Path(directory) if directory is not None else None
        self.partitions = partitions
        self.workers = max(1, workers)
        self._conns: dict[int, sqlite3.Connection] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            meta_path = self.directory / INDEX_META
            if meta_path.exists():
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                if meta.get("partitions") != partitions:
                    raise ValueError(
                        f"{meta_path}: the index was built with {meta.get('partitions')} partitions, the "
                        f"recipe asks for {partitions}; rebuild it (delete the directory) or keep the setting"
                    )
            else:
                write_json(meta_path, {"partitions": partitions, "key": "blake2b-128 of normalised text"})
        else:
            self.workers = 1  # in-memory databases live in one connection each

    def bucket(self, key: bytes) -> int:
        return int.from_bytes(key[:2], "big") % self.partitions

    def bucket_path(self, bucket: int) -> Path | None:
        return None if self.directory is None else self.directory / f"part-{bucket:03d}.sqlite"

    def _conn(self, bucket: int) -> sqlite3.Connection:
        conn = self._conns.get(bucket)
        if conn is None:
            path = self.bucket_path(bucket)
            conn = sqlite3.connect(
                ":memory:" if path is None else str(path), isolation_level=None, check_same_thread=False
            )
            if path is not None:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conns[bucket] = conn
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            if self.directory is not None:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # fold the journal into the bucket file
            conn.close()
        self._conns.clear()

    def __enter__(self) -> ExactIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def claim(
        self, source: str, priority: int, source_rank: int, shard: int, entries: Sequence[Entry]
    ) -> dict[int, Owner]:
        """Offer `entries` (documents of one shard) to the index; return, per row, the winning copy.

        Each bucket is updated in one transaction; the winners are read inside the same transaction."""
        by_bucket: dict[int, list[Entry]] = {}
        for e in entries:
            by_bucket.setdefault(self.bucket(e.key), []).append(e)
        for b in by_bucket:
            self._conn(b)  # open connections in this thread, before any worker uses them
        tasks = [(b, es, source, -priority, source_rank, shard) for b, es in sorted(by_bucket.items())]
        owners: dict[int, Owner] = {}
        if self.workers > 1 and len(tasks) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                for part in pool.map(lambda t: self._claim_bucket(*t), tasks):
                    owners.update(part)
        else:
            for t in tasks:
                owners.update(self._claim_bucket(*t))
        return owners

    def _claim_bucket(
        self, bucket: int, entries: list[Entry], source: str, neg_priority: int, source_rank: int, shard: int
    ) -> dict[int, Owner]:
        conn = self._conn(bucket)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                _UPSERT, ((e.key, neg_priority, source_rank, shard, e.row, source, e.doc_id) for e in entries)
            )
            winners: dict[bytes, Owner] = {}
            keys = list({e.key for e in entries})
            for i in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[i : i + _LOOKUP_CHUNK]
                q = f"SELECT key, source, doc_id, shard, row FROM seen WHERE key IN ({','.join('?' * len(chunk))})"
                for key, src, doc_id, sh, row in conn.execute(q, chunk):
                    winners[key] = Owner(src, doc_id, sh, row)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return {e.row: winners[e.key] for e in entries}

    def begin_shard(self, source: str, shard: int, name: str, fingerprint: str) -> None:
        """Record, before any document of the shard is claimed, which file is being indexed (docs -1
        until `record_shard`): a later run that finds a different file there knows claims may be stale."""
        self.record_shard(source, shard, name, -1, fingerprint)

    def sync_ranks(self, ranks: dict[str, tuple[int, int]], complete: bool = True) -> dict[str, list[str]]:
        """Bring the stored ranks in line with the recipe's: `ranks` maps every source of the recipe to
        (priority, source order). A source whose rank changed gets its rows re-ranked in every bucket; a
        source the index knows but `ranks` does not name has its claims dropped. Restartable: the stored
        rank is written after the buckets are updated, and updates are idempotent. With `complete`
        False, `ranks` may name only some sources and nothing is forgotten.

        Returns {"reranked": [...], "forgotten": [...]}."""
        conn0 = self._conn(0)
        stored = {
            src: (-neg, rank)
            for src, neg, rank in conn0.execute("SELECT source, neg_priority, source_rank FROM ranks")
        }
        owners = set(self.stats()["per_source"]) | {
            src for (src,) in conn0.execute("SELECT DISTINCT source FROM shards")
        }
        reranked = sorted(s for s in ranks if s in stored and stored[s] != tuple(ranks[s]))
        # Rows of a source indexed before ranks were stored carry their rank already; only a source with
        # rows and no stored rank is checked row by row (once).
        for src in sorted((owners & set(ranks)) - set(stored)):
            neg, rank = -ranks[src][0], ranks[src][1]
            for b in range(self.partitions):
                hit = (
                    self._conn(b)
                    .execute(
                        "SELECT 1 FROM seen WHERE source = ? AND (neg_priority != ? OR source_rank != ?) LIMIT 1",
                        (src, neg, rank),
                    )
                    .fetchone()
                )
                if hit:
                    reranked.append(src)
                    break
        for src in reranked:
            neg, rank = -ranks[src][0], ranks[src][1]
            for b in range(self.partitions):
                self._conn(b).execute(
                    "UPDATE seen SET neg_priority = ?, source_rank = ? WHERE source = ?", (neg, rank, src)
                )
        forgotten = sorted(owners - set(ranks)) if complete else []
        for src in forgotten:
            self.forget_source(src)
        conn0.execute("BEGIN IMMEDIATE")
        if complete:
            conn0.execute("DELETE FROM ranks")
        conn0.executemany(
            "INSERT OR REPLACE INTO ranks (source, neg_priority, source_rank) VALUES (?, ?, ?)",
            [(src, -p, r) for src, (p, r) in sorted(ranks.items())],
        )
        conn0.execute("COMMIT")
        return {"reranked": sorted(reranked), "forgotten": forgotten}

    def record_shard(self, source: str, shard: int, name: str, docs: int, fingerprint: str = "") -> None:
        """Note that a shard was fully indexed (in bucket 0's database), with the fingerprint of the file
        it was read from, so a later run can tell whether the source's input changed."""
        conn = self._conn(0)
        conn.execute(
            "INSERT INTO shards (source, shard, name, docs, fingerprint) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(source, shard) DO UPDATE SET name = excluded.name, docs = excluded.docs, "
            "fingerprint = excluded.fingerprint",
            (source, shard, name, docs, fingerprint),
        )

    def known_ranks(self) -> dict[str, tuple[int, int]]:
        """Stored (priority, source order) of every source."""
        rows = self._conn(0).execute("SELECT source, neg_priority, source_rank FROM ranks")
        return {src: (-neg, rank) for src, neg, rank in rows}

    def shard_fingerprints(self, source: str) -> dict[int, str]:
        rows = self._conn(0).execute("SELECT shard, fingerprint FROM shards WHERE source = ?", (source,))
        return dict(rows.fetchall())

    def forget_source(self, source: str) -> int:
        """Drop every hash a source owns, before re-indexing a source whose input changed (a text it
        no longer holds must not keep blocking other copies). Copies held by lower-priority sources
        come back when those sources are deduplicated again.

        Restartable: a marker row in bucket 0 says a reset is under way until every bucket is done."""
        conn0 = self._conn(0)
        conn0.execute("BEGIN IMMEDIATE")
        conn0.execute("INSERT OR IGNORE INTO resets (source) VALUES (?)", (source,))
        conn0.execute("DELETE FROM shards WHERE source = ?", (source,))
        conn0.execute("COMMIT")
        removed = 0
        for b in range(self.partitions):
            removed += self._conn(b).execute("DELETE FROM seen WHERE source = ?", (source,)).rowcount
        conn0.execute("DELETE FROM resets WHERE source = ?", (source,))
        return removed

    def reset_pending(self, source: str) -> bool:
        return (
            self._conn(0).execute("SELECT 1 FROM resets WHERE source = ?", (source,)).fetchone() is not None
        )

    def stats(self) -> dict:
        """Hashes per bucket and per owning source, and the size on disk."""
        per_bucket = []
        per_source: dict[str, int] = {}
        for b in range(self.partitions):
            conn = self._conn(b)
            per_bucket.append(conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0])
            for src, n in conn.execute("SELECT source, COUNT(*) FROM seen GROUP BY source"):
                per_source[src] = per_source.get(src, 0) + n
        size = 0
        if self.directory is not None:
            size = sum(p.stat().st_size for p in self.directory.glob("part-*.sqlite*"))
        return {"keys": sum(per_bucket), "per_bucket": per_bucket, "per_source": per_source, "bytes": size}

    def dump(self) -> list[tuple]:
        """Every row, sorted (for tests and audits)."""
        rows = []
        for b in range(self.partitions):
            rows += self._conn(b).execute("SELECT * FROM seen").fetchall()
        return sorted(rows)

    def integrity(self) -> list[str]:
        """SQLite's integrity check of every bucket ('ok' each when consistent)."""
        return [self._conn(b).execute("PRAGMA integrity_check").fetchone()[0] for b in range(self.partitions)]
