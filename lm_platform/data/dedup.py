"""Exact deduplication on a normalised key, within a source and against higher-priority sources.

The key ignores case, punctuation, symbols and whitespace, so copies that differ only in those (or in
Unicode form, which curation already unified) count as the same document. The first copy in reading
order is kept; a copy already kept by a higher-priority source is dropped as a cross-source hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import multiprocessing
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lm_platform.atomic import atomic_dir, atomic_path, read_json, write_json
from lm_platform.data.decontam import Decontaminator
from lm_platform.data.dedup_index import Entry, ExactIndex
from lm_platform.data.documents import DocWriter, iter_docs
from lm_platform.data.minhash import (
    MinHasher,
    TokenHasher,
    band_keys,
    candidate_pairs,
    components,
    ngram_hashes,
    token_hashes,
)
from lm_platform.data.near_verify import SourceTexts, StaleTexts, verify_pairs
from lm_platform.recipe.schema import ExactDedupConfig, NearDupConfig, Recipe
from lm_platform.results import JsonResult


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


# ---------------------------------------------------------------------------------------------------
# The dedup stage of the asset graph: exact (persistent index) -> MinHash signatures -> clusters ->
# filter (near duplicates and evaluation leaks). Each step reads and writes files; see docs in each.
# ---------------------------------------------------------------------------------------------------

STATS_FILE = "stats.json"
REMOVED_FILE = "removed.parquet"
SIG_PARAMS_FILE = "params.json"


def shard_file(directory: str | Path, shard: int) -> Path:
    return Path(directory) / f"{shard:05d}.parquet"


def file_fingerprint(path: str | Path) -> str:
    """Identity of a shard file: name, size and modification time (atomic rewrites change the last)."""
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{st.st_mtime_ns}"


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


def ids_digest(ids: Iterable[str]) -> str:
    """Content identity of a shard's documents: a hash of their ids in order (the same documents in the
    same order give the same digest, whatever the file's name or modification time)."""
    h = hashlib.blake2b(digest_size=16)
    for doc_id in ids:
        h.update(doc_id.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def _signature_worker(args: tuple) -> tuple[int, str]:
    in_path, out_path, chars, n, bands, rows, seed = args
    hasher = MinHasher(bands, rows, seed)
    params = hasher.params()
    tokens = TokenHasher()
    ids: list[str] = []
    with atomic_path(out_path) as tmp:
        count = 0
        with open(tmp, "wb") as fh:
            # Header first (row count patched at the end), then signatures batch by batch: bounded memory.
            np.lib.format.write_array_header_2_0(
                fh, {"descr": "<u4", "fortran_order": False, "shape": (2**40, hasher.num_perm)}
            )
            header_end = fh.tell()
            for batch in pq.ParquetFile(in_path).iter_batches(batch_size=2048, columns=["id", "text"]):
                ids += batch.column("id").to_pylist()
                texts = batch.column("text").to_pylist()
                # n-gram hashes with repeats: the signature is a minimum, so sorting them out would be waste
                sigs = [
                    hasher.signature(ngram_hashes(token_hashes(t, chars, tokens), n), params) for t in texts
                ]
                if sigs:
                    fh.write(np.stack(sigs).astype("<u4").tobytes())
                count += len(sigs)
            fh.seek(0)
            np.lib.format.write_array_header_2_0(
                fh, {"descr": "<u4", "fortran_order": False, "shape": (count, hasher.num_perm)}
            )
            if fh.tell() != header_end:  # pragma: no cover - the padded header has a fixed size
                raise RuntimeError("signature header size changed")
    ids_path = Path(out_path).with_suffix(".ids.parquet")
    with atomic_path(ids_path) as tmp:
        pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), tmp, compression="zstd")
    return count, ids_digest(ids)


def signature_params(lang: str, cfg: NearDupConfig) -> dict:
    chars = lang in cfg.char_languages
    return {
        "shingle": "chars" if chars else "words",
        "ngram": cfg.char_ngram if chars else cfg.word_ngram,
        "bands": cfg.bands,
        "rows": cfg.rows,
        "seed": cfg.seed,
    }


@dataclass(frozen=True, eq=False)  # equality: as the JSON mapping (JsonResult)
class MinhashResult(JsonResult):
    """The signatures' parameters and counts (the fields of their `params.json`)."""

    shingle: str
    ngram: int
    bands: int
    rows: int
    seed: int
    shards: int
    docs: int
    shard_digests: list = field(default_factory=list)  # `ids_digest` of each input shard
    input_shards: list = field(default_factory=list)  # the shards' paths (read back by exact verification)


def minhash_signatures(
    shards: Sequence[str | Path], out_dir: str | Path, lang: str, cfg: NearDupConfig
) -> MinhashResult:
    """MinHash signatures of every document of every shard: `out_dir/NNNNN.npy`, (docs, bands*rows)
    uint32, rows in the shard's order, with the documents' ids in `NNNNN.ids.parquet` and each shard's
    `ids_digest` and path in `params.json` (so a later step can tell whether the shards changed since, and
    read the texts back to verify candidate pairs). Shards are processed in parallel by `cfg.workers`
    processes."""
    p = signature_params(lang, cfg)
    jobs = [
        (str(s), None, p["shingle"] == "chars", p["ngram"], cfg.bands, cfg.rows, cfg.seed) for s in shards
    ]
    with atomic_dir(out_dir) as tmp:
        jobs = [(j[0], str(Path(tmp) / f"{k:05d}.npy"), *j[2:]) for k, j in enumerate(jobs)]
        if cfg.workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=ctx) as pool:
                done = list(pool.map(_signature_worker, jobs))
        else:
            done = [_signature_worker(j) for j in jobs]
        summary = {
            **p,
            "shards": len(jobs),
            "docs": sum(c for c, _ in done),
            "shard_digests": [d for _, d in done],
            "input_shards": [str(Path(s).resolve()) for s in shards],
        }
        write_json(Path(tmp) / SIG_PARAMS_FILE, summary)
    return MinhashResult(**summary)


REMOVED_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("row", pa.int64()),
        ("id", pa.string()),
        ("kept_source", pa.string()),
        ("kept_shard", pa.int32()),
        ("kept_row", pa.int64()),
        ("kept_id", pa.string()),
        ("cluster_size", pa.int32()),
    ]
)
REMOVED_FORMAT = 2  # 2: removals keyed by document id, with the digests of the shards they came from


class _Signatures:
    """The signature files of every source, addressed by global document id; read in bounded chunks
    (sequential reads, or a memory map whose pages are dropped after each gather)."""

    def __init__(self, signature_dirs: Sequence[tuple[str, str | Path]], num_perm: int):
        self.files: list[tuple[Path, int, int]] = []  # (path, header bytes, rows)
        self.shard_of: list[tuple[int, int]] = []  # file -> (source index, shard)
        starts = [0]
        for si, (_, directory) in enumerate(signature_dirs):
            for k, f in enumerate(sorted(Path(directory).glob("[0-9]*.npy"))):
                header = np.load(f, mmap_mode="r", allow_pickle=False)  # reads the header only
                shape, dtype, offset = header.shape, header.dtype, int(header.offset)
                del header
                if len(shape) != 2 or shape[1] != num_perm:
                    raise ValueError(
                        f"{f}: signatures have {shape[1] if len(shape) == 2 else shape} hashes, the recipe "
                        f"asks for {num_perm}"
                    )
                if dtype != np.dtype("<u4"):
                    raise ValueError(f"{f}: signatures are {dtype}, expected uint32")
                self.files.append((f, offset, shape[0]))
                self.shard_of.append((si, k))
                starts.append(starts[-1] + shape[0])
        self.starts = np.array(starts, dtype=np.int64)
        self.n = int(self.starts[-1])
        self.num_perm = num_perm
        self._maps: dict[int, mmap.mmap] = {}

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(global offset, signatures) in order, `rows` at a time, read without a memory map."""
        for i, (path, offset, count) in enumerate(self.files):
            with open(path, "rb") as fh:
                for start in range(0, count, rows):
                    take = min(rows, count - start)
                    fh.seek(offset + start * self.num_perm * 4)
                    arr = np.fromfile(fh, dtype="<u4", count=take * self.num_perm)
                    yield int(self.starts[i]) + start, arr.reshape(take, self.num_perm)

    def gather(self, gids: np.ndarray) -> np.ndarray:
        """Signatures of the documents `gids` (any order)."""
        out = np.empty((len(gids), self.num_perm), dtype=np.uint32)
        which = np.searchsorted(self.starts, gids, side="right") - 1
        for i in np.unique(which).tolist():
            sel = np.flatnonzero(which == i)
            out[sel] = self._view(i)[gids[sel] - self.starts[i]]
        return out

    def _view(self, i: int) -> np.ndarray:
        path, offset, count = self.files[i]
        mm = self._maps.get(i)
        if mm is None:
            with open(path, "rb") as fh:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[i] = mm
        return np.frombuffer(mm, dtype="<u4", count=count * self.num_perm, offset=offset).reshape(
            count, self.num_perm
        )

    def release(self) -> None:
        """Drop the pages gathered so far from memory (they are re-read from disk when needed)."""
        for mm in self._maps.values():
            if hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self._maps.clear()

    def locate(self, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source index, shard, row) of each global id."""
        f = np.searchsorted(self.starts, gids, side="right") - 1
        shard_of = np.array(self.shard_of, dtype=np.int64).reshape(-1, 2)
        return shard_of[f, 0], shard_of[f, 1], gids - self.starts[f]


@dataclass(frozen=True, eq=False)  # equality: as the JSON mapping (JsonResult)
class NearDupResult(JsonResult):
    """Clusters found across sources (the fields of the near stage's `stats.json`)."""

    docs: int
    candidate_pairs: int
    joined_pairs: int
    clusters: int
    removed: int
    per_source: dict
    params: dict
    format: int = REMOVED_FORMAT
    inputs: dict = field(default_factory=dict)  # source -> digests of the shards its signatures came from
    # verification of the candidate pairs (`cfg.verify`): pairs that joined a cluster, pairs refused
    # (`prefiltered` of them on the signatures alone), documents read back, and its cost in seconds
    verified_pairs: int = 0
    rejected_pairs: int = 0
    prefiltered_pairs: int = 0
    verify_docs_read: int = 0
    verify_seconds: float = 0.0


def near_dup_clusters(
    signature_dirs: Sequence[tuple[str, str | Path]],
    out_dir: str | Path,
    cfg: NearDupConfig,
    chunk_docs: int = 4096,
    max_group_pairs: int = 64,
) -> NearDupResult:
    """Cluster near duplicates across sources and choose one document to keep per cluster.

    `signature_dirs` lists (source, directory of `minhash_signatures`) in keep order: the first
    source wins (highest priority), and within a source the earliest shard and row. Writes
    `out_dir/removed.parquet` (every removed document, by id and position, and the copy kept instead)
    and `stats.json` (with the digests of the shards the signatures came from).

    Memory stays bounded by a few arrays of n values: band keys are computed chunk by chunk and spilled
    to one column file per band on disk; each band is then sorted alone (candidate pairs within a bucket,
    `max_group_pairs` earlier members each); candidate pairs are verified (`cfg.verify`: `exact`, on the
    Jaccard of the documents' shingle sets, read back from the shards recorded with the signatures, see
    `near_verify`; `signature`, on the full signatures' estimate; `none`); clusters are connected
    components over numpy arrays. Nothing is held per document in Python."""
    sigs = _Signatures(signature_dirs, cfg.num_perm)
    n = sigs.n
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tmp-bands-") as spill:
        band_files = [Path(spill) / f"band-{b:03d}.u64" for b in range(cfg.bands)]
        with contextlib.ExitStack() as stack:
            handles = [stack.enter_context(open(f, "wb")) for f in band_files]
            for offset, chunk in sigs.chunks(chunk_docs):
                keys = band_keys(chunk, cfg.bands, cfg.rows, offset)
                for b, fh in enumerate(handles):
                    fh.write(np.ascontiguousarray(keys[:, b]).tobytes())
        pairs = np.empty(0, dtype=np.uint64)
        verify = cfg.verify != "none"
        window = max_group_pairs if verify else 1  # without verification a chain joins a bucket
        for f in band_files:
            band = candidate_pairs(np.fromfile(f, dtype=np.uint64), window)
            pairs = np.union1d(pairs, band) if pairs.size else band
            f.unlink()
    candidates = int(pairs.size)
    a = (pairs // np.uint64(max(n, 1))).astype(np.int64)
    b = (pairs % np.uint64(max(n, 1))).astype(np.int64)
    del pairs

    def estimate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        est = np.empty(a.size, dtype=np.float64)
        step = max(1, chunk_docs // 2)
        for start in range(0, a.size, step):
            sa = sigs.gather(a[start : start + step])
            sb = sigs.gather(b[start : start + step])
            est[start : start + step] = (sa == sb).mean(axis=1)
            sigs.release()
        return est

    check = {"verified_pairs": candidates, "rejected_pairs": 0, "prefiltered_pairs": 0}
    check |= {"verify_docs_read": 0, "verify_seconds": 0.0}
    if cfg.verify == "signature" and a.size:
        keep = estimate(a, b) >= cfg.threshold
        check |= {"verified_pairs": int(keep.sum()), "rejected_pairs": int(a.size - keep.sum())}
        a, b = a[keep], b[keep]
    elif cfg.verify == "exact" and a.size:
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tmp-verify-") as spill:
            try:
                keep, vs = verify_pairs(
                    a,
                    b,
                    estimate,
                    sigs.locate,
                    _source_texts(signature_dirs),
                    cfg.threshold,
                    cfg.num_perm,
                    spill,
                )
            except StaleTexts as e:
                raise StaleNearDuplicates(
                    f"near_duplicates: the exact-dedup shards changed since their signatures were computed "
                    f"({e}); materialize minhash/* before near_duplicates"
                ) from e
        check = {
            "verified_pairs": vs.verified,
            "rejected_pairs": vs.rejected,
            "prefiltered_pairs": vs.prefiltered,
            "verify_docs_read": vs.docs_read,
            "verify_seconds": round(vs.seconds, 3),
        }
        a, b = a[keep], b[keep]
    roots = components(n, a, b)
    del a, b
    sizes = np.bincount(roots, minlength=n) if n else np.empty(0, dtype=np.int64)
    removed = np.flatnonzero(roots != np.arange(n)) if n else np.empty(0, dtype=np.int64)
    kept = roots[removed]
    names = [s for s, _ in signature_dirs]
    src_i, shard_i, row_i = sigs.locate(removed)
    ksrc_i, kshard_i, krow_i = sigs.locate(kept)
    ids = _ids_at(signature_dirs, src_i, shard_i, row_i)
    kept_ids = _ids_at(signature_dirs, ksrc_i, kshard_i, krow_i)
    sigs.close()
    name_arr = pa.array(names, pa.string())
    table = pa.table(
        {
            "source": name_arr.take(pa.array(src_i)),
            "shard": pa.array(shard_i.astype(np.int32)),
            "row": pa.array(row_i.astype(np.int64)),
            "id": ids,
            "kept_source": name_arr.take(pa.array(ksrc_i)),
            "kept_shard": pa.array(kshard_i.astype(np.int32)),
            "kept_row": pa.array(krow_i.astype(np.int64)),
            "kept_id": kept_ids,
            "cluster_size": pa.array(sizes[kept].astype(np.int32)),
        },
        schema=REMOVED_SCHEMA,
    )
    per_source: dict[str, dict] = {}
    for si, name in enumerate(names):
        mine = src_i == si
        by = np.bincount(ksrc_i[mine], minlength=len(names))
        per_source[name] = {
            "removed": int(mine.sum()),
            "kept_by": {names[k]: int(c) for k, c in enumerate(by.tolist()) if c},
        }
    inputs = {}
    for name, directory in signature_dirs:
        params_path = Path(directory) / SIG_PARAMS_FILE
        params = json.loads(params_path.read_text(encoding="utf-8")) if params_path.exists() else {}
        inputs[name] = params.get("shard_digests")
    stats = {
        "format": REMOVED_FORMAT,
        "docs": n,
        "candidate_pairs": candidates,
        "joined_pairs": int(n - np.count_nonzero(roots == np.arange(n))) if n else 0,
        "clusters": int(np.count_nonzero(sizes > 1)),
        "removed": int(removed.size),
        "per_source": per_source,
        "inputs": inputs,
        "params": {"bands": cfg.bands, "rows": cfg.rows, "threshold": cfg.threshold, "verify": cfg.verify},
        **check,
    }
    with atomic_dir(out_dir) as tmp:
        pq.write_table(table, Path(tmp) / REMOVED_FILE, compression="zstd")
        write_json(Path(tmp) / STATS_FILE, stats)
    return NearDupResult(**stats)


def _source_texts(signature_dirs: Sequence[tuple[str, str | Path]]) -> list[SourceTexts]:
    """Where exact verification reads each source's documents back (recorded by `minhash_signatures`)."""
    out = []
    for name, directory in signature_dirs:
        directory = Path(directory)
        params_path = directory / SIG_PARAMS_FILE
        params = json.loads(params_path.read_text(encoding="utf-8")) if params_path.exists() else {}
        if not params.get("input_shards"):
            raise StaleNearDuplicates(
                f"{directory}: signatures of '{name}' without the paths of their shards (written by an older "
                "version, or not by minhash_signatures); rematerialize minhash/" + name + " for exact "
                "verification, or set dedup.near.verify: signature"
            )

        def ids_of(k: int, directory: Path = directory) -> list[str]:
            return (
                pq.ParquetFile(directory / f"{k:05d}.ids.parquet")
                .read(columns=["id"])
                .column("id")
                .to_pylist()
            )

        out.append(
            SourceTexts(
                [Path(p) for p in params["input_shards"]],
                params.get("shingle") == "chars",
                int(params["ngram"]),
                ids_of,
            )
        )
    return out


def _ids_at(
    signature_dirs: Sequence[tuple[str, str | Path]],
    src_i: np.ndarray,
    shard_i: np.ndarray,
    row_i: np.ndarray,
) -> pa.Array:
    """Document ids at (source, shard, row) positions, from the signatures' `NNNNN.ids.parquet` files
    (read one shard at a time; only the rows asked for are kept)."""
    out = np.empty(len(src_i), dtype=object)
    if len(src_i) == 0:
        return pa.array([], pa.string())
    pos = np.lexsort((shard_i, src_i))
    keys = np.stack([src_i[pos], shard_i[pos]], axis=1)
    bounds = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1), True])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        si, k = int(keys[lo, 0]), int(keys[lo, 1])
        path = Path(signature_dirs[si][1]) / f"{k:05d}.ids.parquet"
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: signatures without document ids (written by an older version); "
                f"rematerialize minhash/{signature_dirs[si][0]}"
            )
        col = pq.ParquetFile(path).read(columns=["id"]).column("id")
        out[pos[lo:hi]] = col.take(pa.array(row_i[pos[lo:hi]])).to_pylist()
    return pa.array(out.tolist(), pa.string())


def shard_digests(shards: Sequence[str | Path]) -> list[str]:
    """`ids_digest` of each shard (reads only the id column)."""
    return [ids_digest(pq.ParquetFile(s).read(columns=["id"]).column("id").to_pylist()) for s in shards]


def check_near_inputs(near: NearRemovals, shards: Sequence[str | Path]) -> None:
    """Fail with `StaleNearDuplicates` unless the clusters were computed from exactly these shards."""
    current = shard_digests(shards)
    if near.shard_digests is None or list(near.shard_digests) != current:
        changed = (
            "were not recorded"
            if near.shard_digests is None
            else f"{sum(a != b for a, b in zip(near.shard_digests, current, strict=False))} of {len(current)} "
            f"shards differ" + ("" if len(near.shard_digests) == len(current) else " (shard count changed)")
        )
        raise StaleNearDuplicates(
            f"near_duplicates is stale for '{near.source}': it was computed from other exact_dedup/"
            f"{near.source} output than the current one ({changed}); materialize minhash/{near.source} and "
            f"near_duplicates before deduped/{near.source} (e.g. select 'exact_dedup/{near.source}++' "
            "plus near_duplicates+)"
        )


class StaleNearDuplicates(RuntimeError):
    """The near-duplicate clusters were computed from other exact-dedup output than the current one."""


class NearRemovals(Mapping[tuple[int, int], str]):
    """A source's documents that clustering removed: (shard, row) -> the kept copy's source, with each
    removed document's id and the digests of the exact-dedup shards the clusters were computed from
    (None: not recorded). Positions are only trusted together with those digests (see
    `check_near_inputs`), and each removed row's id is checked again when it is dropped."""

    def __init__(
        self, source: str, kept: dict[tuple[int, int], str], ids: dict[tuple[int, int], str], digests
    ):
        self.source = source
        self._kept = kept
        self.ids = ids
        self.shard_digests: list[str] | None = digests

    def __getitem__(self, key: tuple[int, int]) -> str:
        return self._kept[key]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)


def removed_rows(out_dir: str | Path, source: str) -> NearRemovals:
    """The documents of `source` that clustering removed. Output of an older format (without document
    ids and shard digests) is refused with a message saying what to rebuild."""
    out_dir = Path(out_dir)
    stats_path = out_dir / STATS_FILE
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else {}
    if stats.get("format") != REMOVED_FORMAT:
        raise StaleNearDuplicates(
            f"{out_dir}: near-duplicate removals of an older format (positions without document ids or "
            "shard digests); rematerialize the minhash/* assets and near_duplicates"
        )
    table = pq.read_table(out_dir / REMOVED_FILE, columns=["source", "shard", "row", "id", "kept_source"])
    mine = table.filter(pc.equal(table.column("source"), source))
    keys = list(zip(mine.column("shard").to_pylist(), mine.column("row").to_pylist(), strict=True))
    kept = dict(zip(keys, mine.column("kept_source").to_pylist(), strict=True))
    ids = dict(zip(keys, mine.column("id").to_pylist(), strict=True))
    return NearRemovals(source, kept, ids, (stats.get("inputs") or {}).get(source))


@dataclass
class FilterResult:
    docs_in: int = 0
    docs_out: int = 0
    near_removed: int = 0
    near_cross_source_hits: dict[str, int] = field(default_factory=dict)
    contaminated_removed: int = 0
    # evaluation set -> documents it removed (0 for a set that removed none); a document leaking two sets
    # counts for both
    contamination: dict[str, int] = field(default_factory=dict)
    # evaluation set -> {items, items_found, documents_removed, frequent_ngrams, uninformative_items}
    contamination_sets: dict[str, dict] = field(default_factory=dict)
    chars_out: int = 0
    licenses: dict[str, int] = field(default_factory=dict)


CONTAMINATED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("evaluation", pa.string()),
        ("item", pa.int64()),  # the item's position in its evaluation set
        ("share", pa.float64()),  # share of the item the document reproduces
        ("shared_ngrams", pa.int64()),
        ("text", pa.string()),
    ]
)


def filter_deduped(
    shards: Sequence[str | Path],
    out_path: str | Path,
    source: str,
    lang: str,
    near_removed: NearRemovals | None = None,
    decontaminator: Decontaminator | None = None,
    report_path: str | Path | None = None,
) -> FilterResult:
    """Write the exact-deduplicated `shards` of a source to `out_path` without the near duplicates
    clustering removed (by document id) and without documents that leak an evaluation set (listed in
    `report_path`). With a decontaminator, the documents that stay after near-duplicate removal are read
    once first to count how often each evaluation n-gram occurs in the source (`Decontaminator.observe`:
    frequent ones are templates), then filtered.

    The clusters must have been computed from these very shards: when the digests recorded with them
    differ from the shards' (exact dedup of the source was rerun and near_duplicates was not), this fails
    with `StaleNearDuplicates` before writing anything, rather than removing the wrong documents."""
    res = FilterResult()
    if decontaminator is not None:  # every set is reported, also those that remove nothing
        res.contamination = dict.fromkeys(decontaminator.sets, 0)
    if near_removed is not None:
        check_near_inputs(near_removed, shards)
    removals = near_removed if near_removed is not None else {}
    decontaminate = decontaminator is not None and bool(decontaminator.sets)
    if decontaminate:
        decontaminator.start_corpus()  # frequencies are the source's own
        for k, shard in enumerate(shards):
            for row, doc in enumerate(iter_docs(shard, columns=["text"])):
                if (k, row) not in removals:
                    decontaminator.observe(doc["text"], lang)
        decontaminator.finish_observing()
    report = DocWriter(report_path, schema=CONTAMINATED_SCHEMA) if report_path else None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(DocWriter(out_path))
        if report is not None:
            stack.enter_context(report)
        for k, shard in enumerate(shards):
            for row, doc in enumerate(iter_docs(shard)):
                res.docs_in += 1
                kept_by = removals.get((k, row))
                if kept_by is not None:
                    if near_removed is not None and near_removed.ids.get((k, row)) != doc["id"]:
                        raise StaleNearDuplicates(
                            f"{shard}: row {row} is '{doc['id']}', near_duplicates removed "
                            f"'{near_removed.ids.get((k, row))}' there; rematerialize near_duplicates"
                        )
                    res.near_removed += 1
                    if kept_by != source:
                        res.near_cross_source_hits[kept_by] = res.near_cross_source_hits.get(kept_by, 0) + 1
                    continue
                if decontaminate:
                    leaks = decontaminator.matches(doc["text"], lang)
                    if leaks:
                        res.contaminated_removed += 1
                        for name, leak in leaks.items():
                            res.contamination[name] = res.contamination.get(name, 0) + 1
                            if report is not None:
                                report.write(
                                    {
                                        "id": doc["id"],
                                        "source": source,
                                        "evaluation": name,
                                        "item": leak.item,
                                        "share": round(leak.share, 4),
                                        "shared_ngrams": leak.shared_ngrams,
                                        "text": doc["text"],
                                    }
                                )
                        continue
                out.write(doc)
                res.chars_out += len(doc["text"])
                res.licenses[doc["license"]] = res.licenses.get(doc["license"], 0) + 1
    res.docs_out = out.count
    if decontaminator is not None:
        res.contamination_sets = {
            name: {
                "items": sm.items,
                "items_found": sm.items_found,
                "documents_removed": res.contamination.get(name, 0),
                "frequent_ngrams": sm.frequent_ngrams,
                "uninformative_items": sm.uninformative,
            }
            for name, sm in decontaminator.summary.items()
        }
    return res


# ---------------------------------------------------------------------------------------------------
# Stage entry points: what one asset of the dedup group runs, with a frozen result for its report.
# ---------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class DedupedResult:
    """One source after exact dedup, near-duplicate removal and decontamination."""

    docs_in: int
    docs_out: int
    exact_duplicates_removed: int
    cross_source_removed: int
    cross_source_hits: dict[str, int]
    near_duplicates_removed: int | str  # "not run" when near-duplicate removal is off
    near_cross_source_hits: dict[str, int]
    contaminated_removed: int
    contamination: dict[str, int]
    # evaluation set -> items, items found, documents removed, frequent (template) n-grams ignored,
    # uninformative items
    contamination_sets: dict[str, dict]
    contamination_report: Path
    chars_out: int
    licenses: dict[str, int]
    path: Path


def figures_file(base: str | Path, source: str) -> Path:
    """Where the deduped stage leaves a source's dedup figures (read by the dataset card)."""
    return Path(base) / "figures" / f"{source}.json"


def deduplicate_source(
    base: str | Path,
    out_path: str | Path,
    source: str,
    lang: str,
    near: bool,
    decontaminator: Decontaminator | None = None,
) -> DedupedResult:
    """The deduped output of a source: its exact-dedup shards (`base/exact/<source>`) without the near
    duplicates clustering removed (`base/near`, when `near`) and without evaluation leaks (listed in
    `base/decontamination/<source>.parquet`); writes the source's figures for the dataset card."""
    base = Path(base)
    exact = read_json(base / "exact" / source / STATS_FILE)
    report = base / "decontamination" / f"{source}.parquet"
    res = filter_deduped(
        exact_shards(base / "exact" / source),
        out_path,
        source,
        lang,
        near_removed=removed_rows(base / "near", source) if near else None,
        decontaminator=decontaminator,
        report_path=report,
    )
    figures = {
        "docs_in": exact["docs_in"],
        "exact_removed": exact["exact_removed"],
        "cross_source_removed": exact["cross_source_removed"],
        "near_removed": res.near_removed,
        "contaminated_removed": res.contaminated_removed,
        "docs_out": res.docs_out,
    }
    write_json(figures_file(base, source), figures)
    return DedupedResult(
        docs_in=exact["docs_in"],
        docs_out=res.docs_out,
        exact_duplicates_removed=exact["exact_removed"],
        cross_source_removed=exact["cross_source_removed"],
        cross_source_hits=exact["cross_source_hits"],
        near_duplicates_removed=res.near_removed if near else "not run",
        near_cross_source_hits=res.near_cross_source_hits,
        contaminated_removed=res.contaminated_removed,
        contamination=res.contamination,
        contamination_sets=res.contamination_sets,
        contamination_report=report,
        chars_out=res.chars_out,
        licenses=res.licenses,
        path=Path(out_path),
    )
