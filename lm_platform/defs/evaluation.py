"""Evaluation (group `evaluation`): model versions as dynamic partitions (`<recipe>_models`), one
`eval/<benchmark>` asset per recipe evaluation partitioned by version, each with a `no_regression` check,
and `eval/leaderboard`. `model_versions` (group `training`) registers the versions the stages just wrote.
The sensor and the nightly schedule are in `automation`. All work happens in `lm_platform.evaluation`
(`versions`: keys, snapshots, scores; `report`: what these assets show; `leaderboard`)."""

import base64

import dagster as dg

from lm_platform.defs.metadata import headline, md_table, to_metadata, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.evaluation.leaderboard import write_leaderboard
from lm_platform.evaluation.report import (
    VERSION_COLUMNS,
    regression_verdict,
    samples_side_by_side,
    version_rows,
)
from lm_platform.evaluation.versions import (
    discover_versions,
    model_dir,
    predecessor,
    score_version,
    supersede_stale,
)
from lm_platform.paths import Layout
from lm_platform.recipe.schema import EvalConfig, Recipe
from lm_platform.versions import code_version, content_version

GROUP = "evaluation"
CODE = "2"  # scores record the weights they scored; a rescore of the same weights reuses the score
LEADERBOARD = dg.AssetKey(["eval", "leaderboard"])
MODEL_VERSIONS = dg.AssetKey("model_versions")
# The parts of a stored result shown as tables, and their first column.
BREAKDOWNS = (("per_subject", "subject"), ("per_language", "lang"), ("per_task", "task"))


def versions_partitions(recipe: Recipe) -> dg.DynamicPartitionsDefinition:
    """The recipe's model versions: partition sets are instance-wide, so the name carries the recipe."""
    return dg.DynamicPartitionsDefinition(name=recipe.versions_name)


def eval_key(ev: EvalConfig) -> dg.AssetKey:
    return dg.AssetKey(["eval", ev.name])


def register_versions(instance: dg.DagsterInstance, recipe: Recipe, layout: Layout, log=None) -> list[str]:
    """Register every version on disk that the instance does not know yet; returns the new keys. Scores of
    weights a version no longer names (its stage was retrained) move to the history, each with a message
    (`log`, a logger's info) naming what and why."""
    new = discover_versions(recipe, layout, set(instance.get_dynamic_partitions(recipe.versions_name)))
    if new:
        instance.add_dynamic_partitions(recipe.versions_name, new)
    known = list(instance.get_dynamic_partitions(recipe.versions_name))
    for bench, version, where in supersede_stale(layout, [ev.name for ev in recipe.evaluations], known):
        if log is not None:
            log(
                f"{bench} of '{version}' scored other weights than the version names now (retrained); "
                f"moved to {where}"
            )
    return new


def _model_deps(recipe: Recipe) -> list[dg.AssetKey]:
    """Every asset that writes a model version: the stages' checkpoints, adapters merged into the base,
    merges."""
    keys = [dg.AssetKey(["checkpoint", s.name]) for s in recipe.stages]
    if recipe.finetune:
        keys += [dg.AssetKey(["adapter", s.name]) for s in recipe.finetune.instructions if s.merge_into_base]
    return keys + [dg.AssetKey(["merged", m.name]) for m in recipe.merges]


def model_versions_asset(recipe: Recipe) -> dg.AssetsDefinition:
    stages = [s.name for s in recipe.stages]

    @dg.asset(
        key=MODEL_VERSIONS,
        deps=_model_deps(recipe),
        group_name="training",
        kinds={"python"},
        code_version=versioned(CODE, [s.eval_every for s in recipe.stages]),
        description=f"Registers the models (stage exports, kept step checkpoints, adapters, merges) as "
        f"partitions of '{recipe.versions_name}' as soon as they are written; its data version is a hash of "
        "every version's weights, so the scores show stale when the weights of a version change",
        metadata=headline("versions"),
    )
    def _versions(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = storage.layout(recipe.name)
        new = register_versions(context.instance, recipe, layout, context.log.info)
        rows = version_rows(
            layout, list(context.instance.get_dynamic_partitions(recipe.versions_name)), stages
        )
        return dg.MaterializeResult(
            metadata={
                "versions": len(rows),
                "registered_now": dg.MetadataValue.json(new),
                "table": md_table(rows, VERSION_COLUMNS),
            },
            data_version=dg.DataVersion(code_version("w", {r["version"]: r["weights"] for r in rows})),
        )

    return _versions


def _score_metadata(result: dict, layout: Layout, ev: EvalConfig, stages: list[str]) -> dict:
    """A scored result -> metadata: the headline numbers, the previous version, the breakdown tables."""
    better = "higher" if result["higher_is_better"] else "lower"
    meta = {k: result[k] for k in ("score", "n", "stderr", "version", "tokens_seen", "previous_version")}
    meta |= {k: result[k] for k in ("previous_score", "delta", "weights")}
    meta |= {
        "metric": f"{result['metric']} ({better} is better)",
        "model": dg.MetadataValue.path(result["model"]),
    }
    meta["result"] = dg.MetadataValue.path(str(layout.eval_result(ev.name, result["version"])))
    for field, label in BREAKDOWNS:
        if result.get(field):
            rows = [{label: k, **v} for k, v in result[field].items()]
            meta[field] = md_table(rows, list(rows[0]))
    if "metrics" in result:
        meta["metrics"] = dg.MetadataValue.json(result["metrics"])
    if ev.kind == "generation":
        meta["samples"] = md_table(*samples_side_by_side(layout, ev.name, stages, result))
    return to_metadata(meta)


def _regression_check(ev: EvalConfig, result: dict) -> dg.AssetCheckResult:
    verdict = regression_verdict(result, ev.tolerance)
    return dg.AssetCheckResult(
        check_name="no_regression",
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=to_metadata(verdict, previous_version=verdict.previous_version or "none"),
    )


def eval_asset(recipe: Recipe, ev: EvalConfig) -> dg.AssetsDefinition:
    key = eval_key(ev)
    init_from = {s.name: s.init_from for s in recipe.stages}
    stages = [s.name for s in recipe.stages]
    what = (
        f"{ev.prompt_format}, {ev.mode}"
        if ev.kind == "multiple_choice"
        else (ev.location or ", ".join(ev.tasks))
    )
    check = dg.AssetCheckSpec(
        "no_regression",
        asset=key,
        description=f"not worse than {ev.baseline or 'the previous version in the stage chain'} by more "
        f"than {ev.tolerance}",
    )

    @dg.asset(
        key=key,
        deps=[MODEL_VERSIONS],
        partitions_def=versions_partitions(recipe),
        group_name=GROUP,
        kinds={"pytorch"},
        code_version=versioned(CODE, ev, recipe.seed),
        description=f"{ev.kind} ({what}) of each model version",
        check_specs=[check],
        metadata=headline("score", "n", "stderr"),
    )
    def _eval(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout, version = storage.layout(recipe.name), context.partition_key
        if not (model_dir(layout, version) / "config.json").is_file():
            raise dg.Failure(f"model version '{version}': no model at {model_dir(layout, version)}")
        registered = list(context.instance.get_dynamic_partitions(recipe.versions_name))
        baseline = ev.baseline if ev.baseline and ev.baseline != version else None
        prev = baseline or predecessor(version, registered, init_from)
        code = versioned(CODE, ev, recipe.seed)
        result, moved, reused = score_version(ev, layout, version, prev, recipe.seed, code)
        if reused:
            context.log.info(
                f"{ev.name} of '{version}': weights {result['weights']} already scored; score reused"
            )
        if moved is not None:
            context.log.info(
                f"{ev.name} of '{version}': a score of other weights (retrained) moved to {moved}"
            )
        meta = _score_metadata(result, layout, ev, stages)
        if moved is not None:
            meta["superseded_score"] = dg.MetadataValue.path(str(moved))
        return dg.MaterializeResult(
            metadata=meta,
            check_results=[_regression_check(ev, result)],
            data_version=dg.DataVersion(content_version(layout.eval_result(ev.name, version))),
        )

    return _eval


def leaderboard_asset(recipe: Recipe) -> dg.AssetsDefinition:
    names = [ev.name for ev in recipe.evaluations]

    @dg.asset(
        key=LEADERBOARD,
        deps=[eval_key(ev) for ev in recipe.evaluations],
        group_name=GROUP,
        kinds={"python"},
        code_version=versioned(CODE, names),
        description="Every scored model version against every benchmark, and score vs tokens seen",
        metadata=headline("versions"),
    )
    def _leaderboard(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        board = write_leaderboard(storage.layout(recipe.name), names, [s.name for s in recipe.stages])
        meta = {
            "versions": len(board.rows),
            "benchmarks": len(names),
            "leaderboard": md_table(board.rows, ["version", "tokens_seen", *names]),
            "path": dg.MetadataValue.path(str(board.path)),
        }
        if board.plot is not None:
            data = base64.b64encode(board.plot).decode()
            meta["plot"] = dg.MetadataValue.md(f"![score vs tokens seen](data:image/png;base64,{data})")
            meta["plot_file"] = dg.MetadataValue.path(str(board.plot_file))
        return dg.MaterializeResult(metadata=meta)

    return _leaderboard


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """`model_versions`, one asset per evaluation of the recipe, and the leaderboard."""
    assets = [model_versions_asset(recipe)]
    if recipe.evaluations:
        assets += [eval_asset(recipe, ev) for ev in recipe.evaluations] + [leaderboard_asset(recipe)]
    return assets
