"""Evaluation (group `evaluation`): model versions as dynamic partitions (`<recipe>_models`), one
`eval/<benchmark>` asset per recipe evaluation partitioned by version, each with a `no_regression` check,
and `eval/leaderboard`. `model_versions` (group `training`) registers the versions the stages just wrote.
The sensor and the nightly schedule are in `automation`. All work happens in `lm_platform.evaluation`."""

import base64

import dagster as dg

from lm_platform.atomic import write_json
from lm_platform.defs.metadata import headline, versioned
from lm_platform.defs.resources import LMStorage
from lm_platform.recipe.schema import EvalConfig, Recipe
from lm_platform.versions import code_version, content_version

GROUP = "evaluation"
CODE = "2"  # scores record the weights they scored; a rescore of the same weights reuses the score
LEADERBOARD = dg.AssetKey(["eval", "leaderboard"])
MODEL_VERSIONS = dg.AssetKey("model_versions")


def versions_partitions(recipe: Recipe) -> dg.DynamicPartitionsDefinition:
    """The recipe's model versions: partition sets are instance-wide, so the name carries the recipe."""
    return dg.DynamicPartitionsDefinition(name=recipe.versions_name)


def eval_key(ev: EvalConfig) -> dg.AssetKey:
    return dg.AssetKey(["eval", ev.name])


def register_versions(instance: dg.DagsterInstance, recipe: Recipe, base, log=None) -> list[str]:
    """Register every version on disk that the instance does not know yet; returns the new keys. Scores of
    weights a version no longer names (its stage was retrained) move to the history, each with a message
    (`log`, a logger's info) naming what and why."""
    from lm_platform.evaluation.versions import discover_versions, supersede_stale

    new = discover_versions(recipe, base, set(instance.get_dynamic_partitions(recipe.versions_name)))
    if new:
        instance.add_dynamic_partitions(recipe.versions_name, new)
    known = list(instance.get_dynamic_partitions(recipe.versions_name))
    for bench, version, where in supersede_stale(base, [ev.name for ev in recipe.evaluations], known):
        if log is not None:
            log(
                f"{bench} of '{version}' scored other weights than the version names now (retrained); "
                f"moved to {where}"
            )
    return new


def _md(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _nullable(v):
    return dg.MetadataValue.null() if v is None else v


def _model_deps(recipe: Recipe) -> list[dg.AssetKey]:
    """Every asset that writes a model version: the stages' checkpoints, adapters merged into the base,
    merges."""
    keys = [dg.AssetKey(["checkpoint", s.name]) for s in recipe.stages]
    if recipe.finetune:
        keys += [dg.AssetKey(["adapter", s.name]) for s in recipe.finetune.instructions if s.merge_into_base]
    return keys + [dg.AssetKey(["merged", m.name]) for m in recipe.merges]


def model_versions_asset(recipe: Recipe) -> dg.AssetsDefinition:
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
        from lm_platform.evaluation.versions import chain_order, model_dir, tokens_seen, weights_hash

        base = storage.layout(recipe.name).base
        new = register_versions(context.instance, recipe, base, context.log.info)
        known = list(context.instance.get_dynamic_partitions(recipe.versions_name))
        rows = [
            {
                "version": k,
                "tokens_seen": tokens_seen(model_dir(base, k)),
                "weights": weights_hash(model_dir(base, k)),
                "path": str(model_dir(base, k)),
            }
            for k in chain_order(known, [s.name for s in recipe.stages])
        ]
        weights = {r["version"]: r["weights"] for r in rows}
        return dg.MaterializeResult(
            metadata={
                "versions": len(rows),
                "registered_now": dg.MetadataValue.json(new),
                "table": _md(rows, ["version", "tokens_seen", "weights", "path"]),
            },
            data_version=dg.DataVersion(code_version("w", weights)),
        )

    return _versions


def _score_metadata(result: dict, result_file) -> dict:
    """A scored result -> metadata: the headline numbers, the previous version, the breakdown table."""
    meta = {
        "score": result["score"],
        "metric": f"{result['metric']} ({'higher' if result['higher_is_better'] else 'lower'} is better)",
        "n": result["n"],
        "stderr": result["stderr"],
        "version": result["version"],
        "tokens_seen": _nullable(result["tokens_seen"]),
        "previous_version": _nullable(result["previous_version"]),
        "previous_score": _nullable(result["previous_score"]),
        "delta": _nullable(result["delta"]),
        "model": dg.MetadataValue.path(result["model"]),
        "result": dg.MetadataValue.path(str(result_file)),
    }
    for field, label in (("per_subject", "subject"), ("per_language", "lang"), ("per_task", "task")):
        if result.get(field):
            rows = [{label: k, **v} for k, v in result[field].items()]
            meta[field] = _md(rows, list(rows[0]))
    if "metrics" in result:
        meta["metrics"] = dg.MetadataValue.json(result["metrics"])
    return meta


def _samples_table(recipe: Recipe, ev: EvalConfig, base, result: dict) -> dg.MetadataValue:
    """Generation: each prompt's greedy output under every scored version, side by side."""
    from lm_platform.evaluation.generation import side_by_side
    from lm_platform.evaluation.versions import chain_order, current_results

    current = current_results(base, ev.name)
    versions = set(current) | {result["version"]}
    order = chain_order(sorted(versions), [s.name for s in recipe.stages])
    by_version = {v: current.get(v, {}).get("samples", []) for v in order}
    by_version[result["version"]] = result["samples"]
    return _md(side_by_side(by_version), ["prompt", *order])


def _regression(ev: EvalConfig, result: dict) -> dg.AssetCheckResult:
    from lm_platform.evaluation.stats import regression

    prev = result["previous_score"]
    worse = (
        0.0 if prev is None else regression(result["score"], prev, ev.tolerance, result["higher_is_better"])
    )
    return dg.AssetCheckResult(
        check_name="no_regression",
        passed=worse == 0.0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "previous_version": result["previous_version"] or "none",
            "previous_score": _nullable(prev),
            "score": result["score"],
            "tolerance": ev.tolerance,
            "beyond_tolerance": worse,
        },
    )


def eval_asset(recipe: Recipe, ev: EvalConfig) -> dg.AssetsDefinition:
    key = eval_key(ev)
    init_from = {s.name: s.init_from for s in recipe.stages}
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
        from lm_platform.evaluation.versions import model_dir, predecessor, result_path, score_version

        base = storage.layout(recipe.name).base
        version = context.partition_key
        path = model_dir(base, version)
        if not (path / "config.json").is_file():
            raise dg.Failure(f"model version '{version}': no model at {path}")
        registered = list(context.instance.get_dynamic_partitions(recipe.versions_name))
        prev = (
            ev.baseline
            if ev.baseline and ev.baseline != version
            else predecessor(version, registered, init_from)
        )
        result, moved, reused = score_version(
            ev, base, version, prev, recipe.seed, versioned(CODE, ev, recipe.seed)
        )
        weights = result["weights"]
        if reused:
            context.log.info(f"{ev.name} of '{version}': weights {weights} already scored; score reused")
        if moved is not None:
            context.log.info(
                f"{ev.name} of '{version}': a score of other weights (retrained) moved to {moved}"
            )
        meta = _score_metadata(result, result_path(base, ev.name, version))
        meta["weights"] = _nullable(weights)
        if moved is not None:
            meta["superseded_score"] = dg.MetadataValue.path(str(moved))
        if ev.kind == "generation":
            meta["samples"] = _samples_table(recipe, ev, base, result)
        return dg.MaterializeResult(
            metadata=meta,
            check_results=[_regression(ev, result)],
            data_version=dg.DataVersion(content_version(result_path(base, ev.name, version))),
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
        from lm_platform.evaluation.leaderboard import leaderboard_plot, leaderboard_rows

        base = storage.layout(recipe.name).base
        rows = leaderboard_rows(names, [s.name for s in recipe.stages], base)
        write_json(base / "eval" / "leaderboard.json", rows)
        meta = {
            "versions": len(rows),
            "benchmarks": len(names),
            "leaderboard": _md(rows, ["version", "tokens_seen", *names]),
        }
        png = leaderboard_plot(names, rows)
        if png:
            (base / "eval" / "leaderboard.png").write_bytes(png)
            data = base64.b64encode(png).decode()
            meta["plot"] = dg.MetadataValue.md(f"![score vs tokens seen](data:image/png;base64,{data})")
            meta["plot_file"] = dg.MetadataValue.path(str(base / "eval" / "leaderboard.png"))
        return dg.MaterializeResult(metadata=meta)

    return _leaderboard


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """`model_versions`, one asset per evaluation of the recipe, and the leaderboard."""
    assets = [model_versions_asset(recipe)]
    if recipe.evaluations:
        assets += [eval_asset(recipe, ev) for ev in recipe.evaluations] + [leaderboard_asset(recipe)]
    return assets
