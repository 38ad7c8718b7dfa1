"""Corpus: one asset per source, the raw documents read from where the recipe says (group `corpus`)."""

import dagster as dg

from lm_platform.atomic import write_json
from lm_platform.data.documents import DocWriter
from lm_platform.data.readers import ReadStats, read_source
from lm_platform.defs.metadata import headline, materialize, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.schema import Recipe, SourceConfig
from lm_platform.versions import content_version


def corpus_asset(recipe: Recipe, src: SourceConfig) -> dg.AssetsDefinition:
    cpt = recipe.languages[src.language].chars_per_token

    @dg.asset(
        key=["corpus", src.name],
        group_name="corpus",
        kinds={"python", "parquet"},
        code_version=versioned(src, cpt),
        description=f"Raw documents of source '{src.name}' ({src.language}, {src.license}) from {src.location}",
        metadata={
            "license": src.license,
            "origin": src.origin or src.location,
            "format": src.format,
            **headline("docs", "est_tokens", "license"),
        },
    )
    def _corpus(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        path = storage.layout(recipe.name).corpus(src.name)
        stats = ReadStats()
        chars = nbytes = 0
        with DocWriter(path) as out:
            for doc in read_source(src, stats, chars_per_token=cpt):
                out.write(doc)
                chars += len(doc["text"])
                nbytes += len(doc["text"].encode("utf-8"))
        quarantine = path.with_suffix(".quarantine.json")
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
            docs=out.count,
            chars=chars,
            bytes=nbytes,
            est_tokens=round(chars / cpt),
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
