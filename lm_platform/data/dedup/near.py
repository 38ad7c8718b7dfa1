"""Near duplicates across sources: MinHash signatures per shard, LSH candidate pairs, verified clusters.

`minhash_signatures` writes each exact-dedup shard's signatures (and its documents' ids and id digest);
`near_dup_clusters` bands them, verifies the candidate pairs and joins clusters over every source,
keeping one document per cluster; `removed_rows` reads a source's removals back for the deduped step.
The primitives (hashing, bands, connected components) are in `data/dedup/minhash.py`, the exact Jaccard
verification in `data/dedup/near_verify.py`.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import multiprocessing
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lm_platform.atomic import atomic_dir, atomic_path, write_json
from lm_platform.data.dedup.minhash import (
    MinHasher,
    TokenHasher,
    band_keys,
    candidate_pairs,
    components,
    ngram_hashes,
    token_hashes,
)
from lm_platform.data.dedup.near_verify import SourceTexts, StaleTexts, verify_pairs
from lm_platform.data.dedup.staleness import StaleNearDuplicates, ids_digest
from lm_platform.recipe.schema import NearDupConfig
from lm_platform.results import JsonResult

STATS_FILE = "stats.json"
REMOVED_FILE = "removed.parquet"
SIG_PARAMS_FILE = "params.json"


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


class NearRemovals(Mapping[tuple[int, int], str]):
    """A source's documents that clustering removed: (shard, row) -> the kept copy's source, with each
    removed document's id and the digests of the exact-dedup shards the clusters were computed from
    (None: not recorded). Positions are only trusted together with those digests (see
    `staleness.check_near_inputs`), and each removed row's id is checked again when it is dropped."""

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
