"""Corpus: one asset per source, the raw documents read from where the recipe says (group `corpus`). A
sharded hub source (`format: hf`, `shards: N`) is read in shards too, by the dataset's files: the asset is
partitioned like `curated/<source>`, one shard file per partition (`corpus/<source>/<shard>.parquet`)."""

from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from lm_platform.atomic import write_json
from lm_platform.data.corpus.documents import DocWriter
from lm_platform.data.corpus.hub_shards import read_corpus_shard
from lm_platform.data.corpus.readers import ReadStats, read_source
from lm_platform.defs.metadata import headline, materialize, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe, SourceConfig
from lm_platform.versions import content_version


def _write(docs: Iterable[dict], path: Path, counts: dict[str, int]) -> None:
    with DocWriter(path) as out:
        for doc in docs:
            out.write(doc)
            counts["chars"] += len(doc["text"])
            counts["bytes"] += len(doc["text"].encode("utf-8"))
    counts["docs"] += out.count


def _read(
    context: dg.AssetExecutionContext, src: SourceConfig, layout: Layout, cpt: float, stats: ReadStats
) -> tuple[dict[str, int], Path, Path]:
    """Write the source, or this run's shards of it; returns the counts, where the documents are and the
    quarantine file."""
    counts = {"docs": 0, "chars": 0, "bytes": 0}
    if not src.sharded_read:
        path = layout.corpus(src.name)
        _write(read_source(src, stats, chars_per_token=cpt), path, counts)
        return counts, path, path.with_suffix(".quarantine.json")
    keys = context.partition_keys
    for k in keys:
        docs = read_corpus_shard(src, int(k), src.shards, stats, chars_per_token=cpt)
        _write(docs, layout.corpus_shard(src.name, k), counts)
    first = layout.corpus_shard(src.name, keys[0])
    if len(keys) == 1:
        return counts, first, first.with_suffix(".quarantine.json")
    return counts, first.parent, first.parent / f"{keys[0]}-{keys[-1]}.quarantine.json"


def source_stamp(src: SourceConfig) -> list:
    """What the source's local files are now (name, size, modification time), read when the definitions
    load: part of `corpus/<source>`'s code version, so documents appended to a source show the corpus (and
    what it feeds) stale. Empty for a hub dataset id (nothing is fetched to look)."""
    root = Path(src.location)
    if not root.is_absolute() or not root.exists():
        return []
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [
        (str(p.relative_to(root)) if p != root else p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in files
    ]


def corpus_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    cpt = recipe.languages[src.language].chars_per_token
    shard_keys = [f"{i:04d}" for i in range(src.shards)]  # the partitions of curated/<source>

    @dg.asset(
        key=["corpus", src.name],
        group_name="corpus",
        kinds={"python", "parquet"},
        # The source as read (not dedup's priority) and its files' stamp.
        code_version=versioned(src.model_dump(mode="json", exclude={"priority"}), cpt, source_stamp(src)),
        partitions_def=dg.StaticPartitionsDefinition(shard_keys) if src.sharded_read else None,
        backfill_policy=dg.BackfillPolicy.single_run() if src.sharded_read else None,
        description=f"Raw documents of source '{src.name}' ({src.language}, {src.license}) from {src.location}"
        + (f", read in {src.shards} shards by data file" if src.sharded_read else ""),
        metadata={
            "license": src.license,
            "origin": src.origin or src.location,
            "format": src.format,
            **headline("docs", "est_tokens", "license"),
        },
    )
    def _corpus(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        stats = ReadStats()
        counts, path, quarantine = _read(context, src, storage.layout(recipe.name), cpt, stats)
        by_reason = dict(stats.by_reason)
        write_json(
            quarantine,
            {"count": stats.quarantined_count, "by_reason": by_reason, "records": stats.quarantined},
        )
        if stats.quarantined_count:
            context.log.warning(
                f"{src.name}: {stats.quarantined_count} bad records quarantined ({by_reason}); see {quarantine}"
            )
        return materialize(
            **counts,
            est_tokens=round(counts["chars"] / cpt),
            license=src.license,
            origin=src.origin or src.location,
            language=src.language,
            quarantined=stats.quarantined_count,
            quarantined_by_reason=by_reason,
            quarantine=quarantine,
            path=path,
            data_version=content_version(path, quarantine),
        )

    return _corpus


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The corpus assets of a recipe."""
    return [corpus_asset(recipe, src) for src in recipe.sources]
