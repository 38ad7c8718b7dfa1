"""The deduplicated output of a source: near-duplicate removals applied, evaluation leaks removed.

Reads the source's exact-dedup shards (`exact.py`), drops the documents clustering removed (`near.py`,
checked against the shards' id digests first: `staleness.py`) and those that leak an evaluation set
(`data/dedup/decontam.py`'s `Decontaminator`), writes the leaks' report and the figures the dataset card reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from lm_platform.atomic import read_json, write_json
from lm_platform.data.corpus.documents import DocWriter, iter_docs
from lm_platform.data.dedup.decontam import Decontaminator
from lm_platform.data.dedup.exact import STATS_FILE, exact_shards
from lm_platform.data.dedup.near import NearRemovals, removed_rows
from lm_platform.data.dedup.staleness import StaleNearDuplicates, check_near_inputs


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
        check_near_inputs(near_removed.source, near_removed.shard_digests, shards)
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
