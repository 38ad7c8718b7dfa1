"""Blend sources into one training stage's document set by exact token share.

Each source was tokenized once with the final tokenizer (`data/blending/tokens.py`); a document costs its ids
plus its boundary tokens, as packing writes them. Ratios may name groups of sources; a group's share is
split among its members in proportion to their available tokens. When a source cannot fill its share,
it gives all it has (up to its epoch cap when upsampling) and the shortfall is shared among the other
sources in proportion to their ratios; each source's target is met within one document. When all
sources together cannot meet the target, the blend holds what there is and the manifest says how much
is missing (or, with `on_shortfall="error"`, nothing is written and `BlendShortfall` is raised). The
output is a document list (source, row, pass), not text. The selection is seeded and deterministic: the
same inputs and seed give the same documents in the same order.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.data.blending.tokens import DOCS_FILE, read_summary
from lm_platform.data.curation.quality_model import quality_buckets
from lm_platform.results import JsonResult

MANIFEST_FILE = "manifest.json"
DOCLIST_FILE = "documents.parquet"


def allocate(ratios: dict[str, float], available: dict[str, float], total: float) -> dict[str, float]:
    """Token targets per source: `ratio * total`, with the share of exhausted sources redistributed to
    the others in proportion to their ratios."""
    targets: dict[str, float] = {}
    open_sources = dict(ratios)
    remaining = float(total)
    while open_sources:
        weight = sum(open_sources.values())
        exhausted = {s: r for s, r in open_sources.items() if available[s] < remaining * r / weight}
        if not exhausted:
            for s, r in open_sources.items():
                targets[s] = remaining * r / weight
            break
        for s in exhausted:
            targets[s] = available[s]
            remaining -= available[s]
            del open_sources[s]
    return targets


class BlendShortfall(ValueError):
    """The sources cannot meet a stage's target (within their epoch caps) and the stage asked to fail."""


def expand_groups(
    mixture: dict[str, float], groups: dict[str, tuple[str, ...]], available: dict[str, float]
) -> tuple[dict[str, float], dict[str, str]]:
    """Per-source ratios: a group's ratio split among its members in proportion to available tokens
    (equally when none has any). Returns the ratios and source -> group."""
    ratios: dict[str, float] = {}
    member_of: dict[str, str] = {}
    for key, ratio in mixture.items():
        members = groups.get(key)
        if members is None:
            ratios[key] = ratio
            continue
        total = sum(available[m] for m in members)
        for m in members:
            ratios[m] = ratio * (available[m] / total if total > 0 else 1 / len(members))
            member_of[m] = key
    return {s: r for s, r in ratios.items()}, member_of


def _allocate_positive(
    ratios: dict[str, float], capacity: dict[str, float], total: float
) -> dict[str, float]:
    """`allocate` for ratios that may be zero (an empty group member gets nothing)."""
    live = {s: r for s, r in ratios.items() if r > 0}
    targets = allocate(live, capacity, total) if live else {}
    return {s: targets.get(s, 0.0) for s in ratios}


def _rounded(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def _rng(seed: str) -> np.random.Generator:
    return np.random.default_rng(
        int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(), "big")
    )


def _select_exact(sizes: np.ndarray, target: int, cap: float, seed: str) -> tuple[np.ndarray, np.ndarray]:
    """(document rows, pass numbers) meeting `target` packed tokens within one document: whole seeded
    passes while a full pass fits (never more than `cap` of the source), then the prefix of one more
    seeded order whose total is nearest the rest."""
    available = int(sizes.sum())
    if target <= 0 or available == 0 or len(sizes) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    rows, passes = [], []
    full = min(target // available, max(1, math.ceil(cap)) - 1 if cap > 1 else 0)
    for p in range(int(full)):
        order = _rng(seed if p == 0 else f"{seed}:pass{p}").permutation(len(sizes))
        rows.append(order)
        passes.append(np.full(len(order), p, dtype=np.int32))
    rest = target - full * available
    p = int(full)
    if rest > 0 and p < max(1, math.ceil(cap)):
        order = _rng(seed if p == 0 else f"{seed}:pass{p}").permutation(len(sizes))
        limit = available if cap >= p + 1 else math.floor((cap - p) * available)
        cum = np.cumsum(sizes[order])
        k = int(np.searchsorted(cum, rest, side="right"))  # cum[k-1] <= rest < cum[k]
        if k < len(cum) and cum[k] <= limit and cum[k] - rest < rest - (cum[k - 1] if k else 0):
            k += 1  # the next document lands nearer the target than stopping short
        rows.append(order[:k])
        passes.append(np.full(k, p, dtype=np.int32))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    return np.concatenate(rows).astype(np.int64), np.concatenate(passes)


@dataclass(frozen=True, eq=False)  # equality: as the JSON mapping (JsonResult)
class TokenBlendResult(JsonResult):
    """What an exact blend took: the fields of its `manifest.json` (counts are packed tokens)."""

    stage: str
    seed: str
    target_tokens: int
    taken_tokens: int
    docs: int
    token_count: str
    boundary_tokens: int
    tokenizer_sha256: str
    ratios: dict
    groups: dict
    shortfall: dict
    sources: list
    licenses: list
    # Where the ratios came from when not from the recipe: e.g. a mixture search's recommendation (its
    # evidence), which the dataset card and the model card show.
    mixture_from: dict | None = None


def blend_tokens(
    tokens_dirs: dict[str, str | Path],
    ratios: dict[str, float],
    target_tokens: int,
    out_dir: str | Path,
    seed: int | str = 0,
    boundary_tokens: int = 2,
    groups: dict[str, tuple[str, ...]] | None = None,
    epoch_caps: dict[str, float] | None = None,
    on_shortfall: str = "record",
    stage: str = "",
    quality_weighting: dict[str, list[tuple[float, float]]] | None = None,
    quality_scores: dict[str, str | Path] | None = None,
    mixture_from: dict | None = None,
) -> TokenBlendResult:
    """Select documents from tokenized sources (source -> `tokens/<source>` directory) to reach
    `target_tokens` packed tokens (each document's tokens plus `boundary_tokens`: 2 for BOS + EOS, 1
    where BOS is EOS), split by `ratios` (sources or groups): each source's target is met within one
    document. Writes `documents.parquet` (source, doc, pass, tokens: a document list, no text) and
    `manifest.json` into `out_dir`. Memory: a few integers per document (Polars reads only the count and
    license columns of each `docs.parquet`).

    `quality_weighting` (source -> [(cumulative top share, weight), ...]) splits a source's target among
    buckets of its documents ranked by their `quality` score (read from `quality_scores`: source -> the
    deduplicated Parquet the source was tokenized from), in proportion to weight x available tokens, and
    selects each bucket as a source of its own (epoch cap: the source's x max(1, weight)); the source's
    total stays its mixture target, met within one document. `mixture_from` (where the ratios came from,
    e.g. a mixture search's recommendation) is recorded in the manifest as it is."""
    import polars as pl

    groups = groups or {}
    epoch_caps = epoch_caps or {}
    sources = [m for k in ratios for m in groups.get(k, (k,))]
    tokenizer = {read_summary(tokens_dirs[s])["tokenizer_sha256"] for s in sources}
    if len(tokenizer) > 1:
        raise ValueError(
            f"stage '{stage}': its sources were tokenized with different tokenizers; rematerialize tokens/"
        )
    sizes: dict[str, np.ndarray] = {}
    for s in sources:
        col = pl.scan_parquet(Path(tokens_dirs[s]) / DOCS_FILE).select("tokens").collect()["tokens"]
        sizes[s] = col.to_numpy().astype(np.int64) + boundary_tokens
    available = {s: float(sizes[s].sum()) for s in sources}
    per_source, member_of = expand_groups(ratios, groups, available)
    caps = {s: float(epoch_caps.get(s, 1.0)) for s in sources}
    capacity = {s: math.floor(available[s] * caps[s]) for s in sources}
    targets_f = _allocate_positive(per_source, {s: float(c) for s, c in capacity.items()}, target_tokens)
    targets = _integer_targets(targets_f, capacity, target_tokens)
    shortfall = max(0, target_tokens - sum(capacity.values()))
    if shortfall > 0 and on_shortfall == "error":
        raise BlendShortfall(
            f"stage '{stage}': the sources hold {sum(capacity.values()):,} tokens within their epoch caps "
            f"({', '.join(f'{s} {capacity[s]:,}' for s in sources)}), the target is {target_tokens:,}; "
            "lower target_tokens, add data, or set upsample/max_epochs"
        )
    rows_out = []
    shares: dict[str, dict] = {}
    license_tables = []
    quality_weighting = quality_weighting or {}
    for s in sources:
        if s in quality_weighting:
            scores, ids = _quality_scores(tokens_dirs[s], (quality_scores or {}).get(s), s, stage)
            rows, passes, buckets = _select_weighted(
                sizes[s], targets[s], caps[s], f"{seed}:{s}", scores, ids, quality_weighting[s]
            )
        else:
            rows, passes = _select_exact(sizes[s], targets[s], caps[s], f"{seed}:{s}")
            buckets = None
        taken = sizes[s][rows]
        rows_out.append(
            pa.table(
                {
                    "source": pa.array([s] * len(rows), pa.string()),
                    "doc": pa.array(rows, pa.int64()),
                    "pass": pa.array(passes, pa.int32()),
                    "tokens": pa.array(taken, pa.int64()),
                }
            )
        )
        chosen = pl.DataFrame({"row": rows, "tokens": taken})
        lic = (
            pl.scan_parquet(Path(tokens_dirs[s]) / DOCS_FILE)
            .select("license", "chars")
            .with_row_index("row")
            .with_columns(pl.col("row").cast(pl.Int64))
            .join(chosen.lazy(), on="row", how="inner")
            .group_by("license")
            .agg(pl.len().alias("docs"), pl.col("tokens").sum(), pl.col("chars").sum())
            .collect()
        )
        license_tables.append(lic)
        taken_tokens = int(taken.sum())
        taken_chars = int(lic["chars"].sum() or 0)
        shares[s] = {
            "source": s,
            "group": member_of.get(s),
            "ratio": per_source[s],
            "target_tokens": int(targets[s]),
            "available_tokens": int(available[s]),
            "available_docs": len(sizes[s]),
            "epoch_cap": caps[s],
            "capacity_tokens": int(capacity[s]),
            "taken_tokens": taken_tokens,
            "taken_docs": len(rows),
            "repeated_docs": int((passes > 0).sum()),
            "max_doc_tokens": int(sizes[s].max()) if len(sizes[s]) else 0,
            "taken_chars": taken_chars,
            "chars_per_token": taken_chars / taken_tokens if taken_tokens else 0.0,
            "epochs": taken_tokens / available[s] if available[s] else 0.0,
            "exhausted": per_source[s] > 0 and targets[s] >= capacity[s],
        }
        if buckets is not None:
            shares[s]["quality_buckets"] = buckets
    total = sum(r["taken_tokens"] for r in shares.values())
    for r in shares.values():
        r["share"] = r["taken_tokens"] / total if total else 0.0
    licenses = (
        pl.concat(license_tables)
        .group_by("license")
        .agg(pl.col("docs").sum(), pl.col("tokens").sum())
        .sort("license")
        if license_tables
        else pl.DataFrame({"license": [], "docs": [], "tokens": []})
    )
    with atomic_dir(out_dir) as tmp:
        doclist = (
            pa.concat_tables(rows_out)
            if rows_out
            else pa.table({"source": [], "doc": [], "pass": [], "tokens": []})
        )
        pq.write_table(doclist, tmp / DOCLIST_FILE, compression="zstd")
        manifest = {
            "stage": stage,
            "seed": str(seed),
            "target_tokens": target_tokens,
            "taken_tokens": total,
            "docs": doclist.num_rows,
            "token_count": "exact: the final tokenizer's ids per document (tokens/<source>) plus "
            f"{boundary_tokens} boundary token{'s' if boundary_tokens != 1 else ''} per document, as the dataset packs them",
            "boundary_tokens": boundary_tokens,
            "tokenizer_sha256": next(iter(tokenizer), ""),
            "ratios": dict(ratios),
            "groups": {g: list(m) for g, m in groups.items()},
            "shortfall": {
                "tokens": shortfall,
                "fraction": shortfall / target_tokens if target_tokens else 0.0,
                "met": shortfall == 0,
                "note": "the sources cannot meet the target within their epoch caps" if shortfall else "",
            },
            "sources": [_rounded(r) for r in shares.values()],
            "licenses": [
                {
                    "license": r["license"],
                    "docs": r["docs"],
                    "tokens": r["tokens"],
                    "share": r["tokens"] / total if total else 0.0,
                }
                for r in licenses.iter_rows(named=True)
            ],
            "mixture_from": mixture_from,
        }
        write_json(tmp / MANIFEST_FILE, manifest)
    return TokenBlendResult(**manifest)


def _integer_targets(targets: dict[str, float], capacity: dict[str, int], total: int) -> dict[str, int]:
    """Whole-token targets summing to min(total, capacity): floors, then the remaining tokens one each to
    the largest fractional parts (ties in source order), never above a source's capacity."""
    out = {s: min(capacity[s], math.floor(t)) for s, t in targets.items()}
    want = min(total, sum(capacity.values()))
    order = sorted(targets, key=lambda s: -(targets[s] - math.floor(targets[s])))
    i = 0
    while sum(out.values()) < want and i < 10 * len(order) + 10:
        s = order[i % len(order)]
        if out[s] < capacity[s]:
            out[s] += 1
        i += 1
    return out


def _quality_scores(tokens_dir, deduped, source: str, stage: str) -> tuple[np.ndarray, list[str]]:
    """The `quality` score and id of each document of `tokens/<source>` (docs.parquet order), from the
    deduplicated file it was tokenized from."""
    import polars as pl

    if deduped is None:
        raise ValueError(f"stage '{stage}': quality_weighting.{source} needs the source's quality scores")
    docs = pl.read_parquet(Path(tokens_dir) / DOCS_FILE, columns=["doc", "id"])
    try:
        quality = pl.read_parquet(deduped, columns=["quality"])["quality"]
    except Exception as exc:  # an older file without the column
        raise ValueError(f"{deduped}: no 'quality' column ({exc}); rematerialize curated/{source}") from exc
    scores = quality.to_numpy()[docs["doc"].to_numpy()]
    if quality.null_count() or np.isnan(scores).any():
        raise ValueError(
            f"{deduped}: documents without a quality score; stage '{stage}' weights '{source}' by quality, "
            f"so sources[{source}].quality must be set and curated/{source} rematerialized"
        )
    return scores.astype(np.float64), docs["id"].to_list()


def _select_weighted(
    sizes: np.ndarray,
    target: int,
    cap: float,
    seed: str,
    scores: np.ndarray,
    ids: list[str],
    buckets: list[tuple[float, float]],
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """`_select_exact` by quality bucket: the target split among the buckets in proportion to weight x
    available tokens (a bucket that runs dry passes its share on), each selected as a source of its own,
    in order, each bucket's target corrected by what the previous ones over- or undershot, so that the
    total lands within one document of `target`. Returns rows, passes and a report per bucket."""
    weights = [float(w) for _s, w in buckets] + [1.0]
    bucket = quality_buckets(scores, ids, [float(s) for s, _w in buckets], seed)
    members = [np.flatnonzero(bucket == b) for b in range(len(weights))]
    avail = {b: int(sizes[m].sum()) for b, m in enumerate(members)}
    caps = {b: cap * max(1.0, weights[b]) for b in avail}
    capacity = {b: math.floor(avail[b] * caps[b]) for b in avail}
    ratios = {b: weights[b] * avail[b] for b in avail}
    targets = _integer_targets(
        _allocate_positive(ratios, {b: float(c) for b, c in capacity.items()}, target), capacity, target
    )
    rows, passes, report = [], [], []
    carry = 0
    for b, m in enumerate(members):
        want = max(0, min(capacity[b], targets[b] + carry))
        r, p = _select_exact(sizes[m], want, caps[b], f"{seed}:q{b}")
        taken = int(sizes[m][r].sum())
        carry = targets[b] + carry - taken
        rows.append(m[r])
        passes.append(p)
        report.append(
            {
                "bucket": b,
                "top_share": buckets[b][0] if b < len(buckets) else 1.0,
                "weight": weights[b],
                "docs": len(m),
                "min_score": round(float(scores[m].min()), 4) if len(m) else None,
                "available_tokens": avail[b],
                "target_tokens": int(targets[b]),
                "taken_tokens": taken,
                "taken_docs": len(r),
                "epochs": round(taken / avail[b], 4) if avail[b] else 0.0,
            }
        )
    return np.concatenate(rows).astype(np.int64), np.concatenate(passes).astype(np.int32), report


def read_document_list(blend_dir: str | Path):
    """The blend's document list as a PyArrow table (source, doc, pass, tokens)."""
    return pq.read_table(Path(blend_dir) / DOCLIST_FILE)
