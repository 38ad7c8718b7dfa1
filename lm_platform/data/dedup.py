"""Exact deduplication on a normalised key, within a source and against higher-priority sources.

The key ignores case, punctuation, symbols and whitespace, so copies that differ only in those (or in
Unicode form, which curation already unified) count as the same document. The first copy in reading
order is kept; a copy already kept by a higher-priority source is dropped as a cross-source hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from lm_platform.atomic import atomic_dir, atomic_path, read_json, write_json
from lm_platform.data.decontam import Decontaminator
from lm_platform.data.dedup_index import Entry, ExactIndex
from lm_platform.data.documents import DocWriter, iter_docs
from lm_platform.data.minhash import MinHasher, TokenHasher, band_keys, cluster, shingles
from lm_platform.recipe.schema import ExactDedupConfig, NearDupConfig
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


def dedup_exact_indexed(
    shards: Sequence[str | Path],
    out_dir: str | Path,
    source: str,
    index: ExactIndex,
    priority: int = 0,
    source_rank: int = 0,
    batch_docs: int = 10_000,
    on_batch: Callable[[int, int], None] | None = None,
) -> ExactResult:
    """Exact dedup of one source's curated shards against the persistent `index`.

    Documents are offered to the index batch by batch (one transaction per bucket and batch); a document
    is written to `out_dir/NNNNN.parquet` (one file per input shard) when the index names it the winner
    of its text. `out_dir` appears as a whole when every shard is done; `on_batch(shard, docs_done)`
    is called after each committed batch."""
    res = ExactResult(source)
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


def _signature_worker(args: tuple) -> int:
    in_path, out_path, chars, n, bands, rows, seed = args
    hasher = MinHasher(bands, rows, seed)
    params = hasher.params()
    tokens = TokenHasher()
    sigs = [
        hasher.signature(shingles(d["text"], n, chars, tokens), params) for d in iter_docs(in_path, ["text"])
    ]
    arr = np.stack(sigs) if sigs else np.empty((0, hasher.num_perm), dtype=np.uint32)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    return len(sigs)


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


def minhash_signatures(
    shards: Sequence[str | Path], out_dir: str | Path, lang: str, cfg: NearDupConfig
) -> MinhashResult:
    """MinHash signatures of every document of every shard: `out_dir/NNNNN.npy`, (docs, bands*rows)
    uint32, rows in the shard's order. Shards are processed in parallel by `cfg.workers` processes."""
    p = signature_params(lang, cfg)
    jobs = [
        (str(s), None, p["shingle"] == "chars", p["ngram"], cfg.bands, cfg.rows, cfg.seed) for s in shards
    ]
    with atomic_dir(out_dir) as tmp:
        jobs = [(j[0], str(Path(tmp) / f"{k:05d}.npy"), *j[2:]) for k, j in enumerate(jobs)]
        if cfg.workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=ctx) as pool:
                counts = list(pool.map(_signature_worker, jobs))
        else:
            counts = [_signature_worker(j) for j in jobs]
        summary = {**p, "shards": len(jobs), "docs": sum(counts)}
        write_json(Path(tmp) / SIG_PARAMS_FILE, summary)
    return MinhashResult(**summary)


REMOVED_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("row", pa.int64()),
        ("kept_source", pa.string()),
        ("kept_shard", pa.int32()),
        ("kept_row", pa.int64()),
        ("cluster_size", pa.int32()),
    ]
)


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


def near_dup_clusters(
    signature_dirs: Sequence[tuple[str, str | Path]], out_dir: str | Path, cfg: NearDupConfig
) -> NearDupResult:
    """Cluster near duplicates across sources and choose one document to keep per cluster.

    `signature_dirs` lists (source, directory of `minhash_signatures`) in keep order: the first
    source wins (highest priority), and within a source the earliest shard and row. Writes
    `out_dir/removed.parquet` (every removed document and the copy kept instead) and `stats.json`."""
    index: list[tuple[str, int, int]] = []  # global id -> (source, shard, offset of the shard)
    arrays: list[np.ndarray] = []
    for source, directory in signature_dirs:
        files = sorted(Path(directory).glob("[0-9]*.npy"))
        for k, f in enumerate(files):
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
            if arr.shape[1] != cfg.num_perm:
                raise ValueError(
                    f"{f}: signatures have {arr.shape[1]} hashes, the recipe asks for {cfg.num_perm}"
                )
            index.append((source, k, sum(len(a) for a in arrays)))
            arrays.append(arr)
    n = sum(len(a) for a in arrays)
    # Band keys of every document (bands x 8 bytes each); full signatures stay memory-mapped per shard.
    bands = (
        np.concatenate(
            [
                band_keys(np.asarray(a), cfg.bands, cfg.rows, off)
                for a, (_, _, off) in zip(arrays, index, strict=True)
            ]
        )
        if n
        else np.empty((0, cfg.bands), np.uint64)
    )
    starts = np.array([off for _, _, off in index], dtype=np.int64)

    def locate(gid: int) -> tuple[int, int]:
        i = int(np.searchsorted(starts, gid, side="right") - 1)
        return i, gid - index[i][2]

    def signature_of(gid: int) -> np.ndarray:
        i, row = locate(gid)
        return arrays[i][row]

    uf, candidates, joined = cluster(
        (bands[:, b] for b in range(cfg.bands)),
        n,
        signature_of=signature_of if cfg.verify else None,
        threshold=cfg.threshold if cfg.verify else None,
    )
    roots = uf.roots() if n else np.empty(0, dtype=np.int64)

    def where(gid: int) -> tuple[str, int, int]:
        i, row = locate(gid)
        return index[i][0], index[i][1], row

    removed_ids = np.flatnonzero(roots != np.arange(n)) if n else np.empty(0, dtype=np.int64)
    sizes = np.bincount(roots, minlength=n) if n else np.empty(0, dtype=np.int64)
    per_source: dict[str, dict] = {s: {"removed": 0, "kept_by": {}} for s, _ in signature_dirs}
    rows = []
    for gid in removed_ids.tolist():
        source, shard, row = where(gid)
        ks, kshard, krow = where(int(roots[gid]))
        rows.append(
            {
                "source": source,
                "shard": shard,
                "row": row,
                "kept_source": ks,
                "kept_shard": kshard,
                "kept_row": krow,
                "cluster_size": int(sizes[roots[gid]]),
            }
        )
        st = per_source[source]
        st["removed"] += 1
        st["kept_by"][ks] = st["kept_by"].get(ks, 0) + 1
    stats = {
        "docs": n,
        "candidate_pairs": candidates,
        "joined_pairs": joined,
        "clusters": int(np.count_nonzero(sizes > 1)),
        "removed": len(rows),
        "per_source": per_source,
        "params": {"bands": cfg.bands, "rows": cfg.rows, "threshold": cfg.threshold, "verify": cfg.verify},
    }
    with atomic_dir(out_dir) as tmp:
        with DocWriter(Path(tmp) / REMOVED_FILE, schema=REMOVED_SCHEMA) as w:
            w.write_all(rows)
        write_json(Path(tmp) / STATS_FILE, stats)
    return NearDupResult(**stats)


def removed_rows(out_dir: str | Path, source: str) -> dict[tuple[int, int], str]:
    """(shard, row) -> kept copy's source, for the documents of `source` that clustering removed."""
    path = Path(out_dir) / REMOVED_FILE
    return {(r["shard"], r["row"]): r["kept_source"] for r in iter_docs(path) if r["source"] == source}


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
    chars_out: int = 0
    licenses: dict[str, int] = field(default_factory=dict)


CONTAMINATED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("evaluation", pa.string()),
        ("shared_ngrams", pa.int64()),
        ("text", pa.string()),
    ]
)


def filter_deduped(
    shards: Sequence[str | Path],
    out_path: str | Path,
    source: str,
    lang: str,
    near_removed: dict[tuple[int, int], str] | None = None,
    decontaminator: Decontaminator | None = None,
    report_path: str | Path | None = None,
) -> FilterResult:
    """Write the exact-deduplicated `shards` of a source to `out_path` without the near duplicates
    clustering removed and without documents that leak an evaluation set (listed in `report_path`)."""
    res = FilterResult()
    if decontaminator is not None:  # every set is reported, also those that remove nothing
        res.contamination = dict.fromkeys(decontaminator.sets, 0)
    near_removed = near_removed or {}
    report = DocWriter(report_path, schema=CONTAMINATED_SCHEMA) if report_path else None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(DocWriter(out_path))
        if report is not None:
            stack.enter_context(report)
        for k, shard in enumerate(shards):
            for row, doc in enumerate(iter_docs(shard)):
                res.docs_in += 1
                kept_by = near_removed.get((k, row))
                if kept_by is not None:
                    res.near_removed += 1
                    if kept_by != source:
                        res.near_cross_source_hits[kept_by] = res.near_cross_source_hits.get(kept_by, 0) + 1
                    continue
                if decontaminator is not None and decontaminator.sets:
                    leaks = decontaminator.matches(doc["text"], lang)
                    if leaks:
                        res.contaminated_removed += 1
                        for name, hits in leaks.items():
                            res.contamination[name] = res.contamination.get(name, 0) + 1
                            if report is not None:
                                report.write(
                                    {
                                        "id": doc["id"],
                                        "source": source,
                                        "evaluation": name,
                                        "shared_ngrams": hits,
                                        "text": doc["text"],
                                    }
                                )
                        continue
                out.write(doc)
                res.chars_out += len(doc["text"])
                res.licenses[doc["license"]] = res.licenses.get(doc["license"], 0) + 1
    res.docs_out = out.count
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
) -> ExactStageResult:
    """Exact dedup of one source into `base/exact/<source>` against the index in `base/exact_index`
    (`cfg.index: sqlite`; `memory`: rebuilt from the winners' outputs each time)."""
    base = Path(base)
    directory = base / "exact_index" if cfg.index == "sqlite" else None
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
        contamination_report=report,
        chars_out=res.chars_out,
        licenses=res.licenses,
        path=Path(out_path),
    )
