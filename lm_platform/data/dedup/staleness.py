"""Whether a dedup step's inputs are still the ones its output was computed from.

The exact index records each input shard's file fingerprint (name, size, modification time), so a
shard rewritten after a killed run resets the source's claims; MinHash signatures record each shard's
id digest (its documents' ids in order), so removals computed from other exact-dedup output than the
current one are refused (`StaleNearDuplicates`) instead of removing the wrong documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow.parquet as pq


class StaleNearDuplicates(RuntimeError):
    """The near-duplicate clusters were computed from other exact-dedup output than the current one."""


def file_fingerprint(path: str | Path) -> str:
    """Identity of a shard file: name, size and modification time (atomic rewrites change the last)."""
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{st.st_mtime_ns}"


def ids_digest(ids: Iterable[str]) -> str:
    """Content identity of a shard's documents: a hash of their ids in order (the same documents in the
    same order give the same digest, whatever the file's name or modification time)."""
    h = hashlib.blake2b(digest_size=16)
    for doc_id in ids:
        h.update(doc_id.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def shard_digests(shards: Sequence[str | Path]) -> list[str]:
    """`ids_digest` of each shard (reads only the id column)."""
    return [ids_digest(pq.ParquetFile(s).read(columns=["id"]).column("id").to_pylist()) for s in shards]


def check_near_inputs(source: str, recorded: Sequence[str] | None, shards: Sequence[str | Path]) -> None:
    """Fail with `StaleNearDuplicates` unless `source`'s clusters were computed from exactly these shards
    (`recorded`: the id digests stored with the clusters, None when they were not)."""
    current = shard_digests(shards)
    if recorded is None or list(recorded) != current:
        changed = (
            "were not recorded"
            if recorded is None
            else f"{sum(a != b for a, b in zip(recorded, current, strict=False))} of {len(current)} "
            f"shards differ" + ("" if len(recorded) == len(current) else " (shard count changed)")
        )
        raise StaleNearDuplicates(
            f"near_duplicates is stale for '{source}': it was computed from other exact_dedup/"
            f"{source} output than the current one ({changed}); materialize minhash/{source} and "
            f"near_duplicates before deduped/{source} (e.g. select 'exact_dedup/{source}++' "
            "plus near_duplicates+)"
        )
