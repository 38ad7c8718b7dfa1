"""Mixture search (group `mixture_search`), for each stage with a `mixture_search` section: the candidate
mixtures, one proxy per candidate as a partition of the stage's dynamic partitions (its blend, packed
dataset, checkpoint trained by the trainer like any stage, and score), and the recommendation (the fitted
predictor, its leave-one-out rank correlation, the predicted best mixture, its verification proxy and the
predicted-vs-measured plot). All work is `lm_platform.mixture`.

Proxies are not model versions: they live under `mixture/<stage>/`, not `checkpoint/`, so the model
versions sensor, the nightly evaluation, the training automation and the leaderboard never see them.
`make demo` leaves this group out; `python -m lm_platform.defs.plan --run 'group:mixture_search'` runs it.
"""

import dagster as dg

from lm_platform.atomic import read_json, write_json
from lm_platform.data.blending.pack import boundary_tokens, tokenizer_meta
from lm_platform.defs.metadata import headline, materialize, optional, table, versioned
from lm_platform.defs.resources import LMStorage, run_launch
from lm_platform.mixture import proxy as mx
from lm_platform.mixture.search import recommend
from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe, StageConfig
from lm_platform.training.contract import TrainerLaunch
from lm_platform.training.metrics import png_markdown
from lm_platform.versions import content_version

CODE = "1"
GROUP = "mixture_search"
LEFT_OUT = optional("make mixture-search")  # make demo leaves the group out


def partitions(recipe: Recipe, stage: StageConfig) -> dg.DynamicPartitionsDefinition:
    """The stage's candidates (`c00`, `c01`, ...), registered by mixture_candidates/<stage>."""
    return dg.DynamicPartitionsDefinition(name=f"{recipe.name}_{stage.name}_mixture")


class _Search:
    """What every asset of one stage's search reads: its settings, sources and files."""

    def __init__(self, recipe: Recipe, stage: StageConfig) -> None:
        self.recipe, self.stage, self.cfg = recipe, stage, stage.mixture_search
        self.sources = stage.searched_sources()
        self.caps = {s: stage.blend.epoch_cap(s) for s in self.sources}
        weighting = stage.blend.quality_weighting
        self.weighting = {s: [(b.top_share, b.weight) for b in bs] for s, bs in weighting.items()}
        self.evaluations = {e.name: e for e in recipe.evaluations}

    def layout(self, storage: LMStorage) -> Layout:
        return storage.layout(self.recipe.name)

    def tokens(self, layout: Layout) -> dict:
        return {s: layout.tokens(s) for s in self.sources}

    def boundary(self, layout: Layout) -> int:
        return boundary_tokens(tokenizer_meta(layout.tokenizer()))

    def tokens_keys(self) -> list[dg.AssetKey]:
        """`tokens/<source>` of the searched sources (each made with the tokenizer, which is not a direct
        input here, so that `tokenizer+` stays the stages' own assets)."""
        return [dg.AssetKey(["tokens", x]) for x in self.sources]

    def key(self, kind: str) -> dg.AssetKey:
        return dg.AssetKey([kind, self.stage.name])

    def blend(self, layout: Layout, name: str, weights: dict):
        return mx.blend_proxy(
            weights,
            self.tokens(layout),
            self.cfg.proxy.tokens,
            layout.mixture_proxy(self.stage.name, name) / "blend",
            f"{self.recipe.seed}:{self.stage.name}:{name}",
            self.boundary(layout),
            self.stage.name,
            self.caps,
            self.weighting,
            {s: layout.deduped(s) for s in self.weighting},
        )

    def pack(self, layout: Layout, name: str):
        d = layout.mixture_proxy(self.stage.name, name)
        return mx.pack_proxy(
            d / "blend", self.tokens(layout), layout.tokenizer(), d / "dataset", self.cfg.proxy
        )

    def train(self, context, layout: Layout, trainer, name: str):
        """The proxy's trainer run through the `trainer` resource (Pipes), as every stage trains."""
        d = layout.mixture_proxy(self.stage.name, name)
        job = mx.proxy_job(self.recipe.name, self.stage.name, name, d, layout.tokenizer(), self.cfg.proxy)
        job_file = d / f"{mx.PROXY_MODEL}.job.json"
        write_json(job_file, job.model_dump(mode="json"))
        # Launched like a stage (the stage's pod settings on the k8s profile, the same preemption retries).
        return run_launch(
            trainer, context, TrainerLaunch(str(job_file), job.train.nproc_per_node, self.stage.name)
        )

    def score(self, layout: Layout, name: str) -> dict:
        d = layout.mixture_proxy(self.stage.name, name)
        score = mx.score_model(d / mx.PROXY_MODEL, self.cfg.target, self.evaluations)
        mx.write_score(d, score)
        return score


def _weights_table(rows: list[dict]):
    """One row per candidate: its name, weights and (once scored) score."""
    return table(
        [{"name": r["name"], **r["weights"], **({"score": r["score"]} if "score" in r else {})} for r in rows]
    )


def candidates_asset(s: _Search, parts: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=s.key("mixture_candidates"),
        deps=s.tokens_keys(),
        group_name=GROUP,
        kinds={"python"},
        code_version=versioned(CODE, s.cfg, s.stage.blend),
        description=f"{s.cfg.candidates} mixtures of {', '.join(s.sources)} for stage '{s.stage.name}' "
        "(seeded Dirichlet within the bounds); each becomes a partition of its proxies",
        metadata={**headline("candidates"), **LEFT_OUT},
    )
    def _candidates(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout = s.layout(storage)
        out = layout.mixture_search(s.stage.name) / mx.CANDIDATES_FILE
        available = mx.available_tokens(s.tokens(layout), s.boundary(layout))
        centre = mx.centre_of(s.cfg, s.stage.blend.mixture, s.sources)
        plan = mx.plan_candidates(s.cfg, s.sources, centre, available, out, s.caps)
        names = [c["name"] for c in plan["candidates"]]
        known = set(context.instance.get_dynamic_partitions(parts.name))
        for old in sorted(known - set(names)):
            context.instance.delete_dynamic_partition(parts.name, old)
        context.instance.add_dynamic_partitions(parts.name, [n for n in names if n not in known])
        return materialize(
            candidates=len(names),
            mixtures=_weights_table(plan["candidates"]),
            centre=plan["centre"],
            bounds=plan["bounds"],
            path=out,
            data_version=content_version(out),
        )

    return _candidates


def proxy_assets(s: _Search, parts: dg.DynamicPartitionsDefinition) -> list[dg.AssetsDefinition]:
    common = {"group_name": GROUP, "partitions_def": parts}

    @dg.asset(
        key=s.key("mixture_blend"),
        deps=[s.key("mixture_candidates")]
        + [dg.AssetKey([k, x]) for k in ("tokens", "deduped") for x in s.sources],
        kinds={"python", "parquet"},
        code_version=versioned(CODE, s.cfg.proxy.tokens, s.stage.blend),
        description=f"A candidate's proxy blend for stage '{s.stage.name}' (blend_tokens, the candidate's weights)",
        metadata={**headline("tokens"), **LEFT_OUT},
        **common,
    )
    def _blend(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout, name = s.layout(storage), context.partition_key
        plan = read_json(layout.mixture_search(s.stage.name) / mx.CANDIDATES_FILE)
        res = s.blend(layout, name, mx.candidate_weights(plan, name))
        out = layout.mixture_proxy(s.stage.name, name) / "blend"
        return materialize(
            weights=mx.candidate_weights(plan, name),
            tokens=res["taken_tokens"],
            sources=table(res["sources"], ["source", "ratio", "target_tokens", "taken_tokens", "epochs"]),
            shortfall_tokens=res["shortfall"]["tokens"],
            data_version=content_version(out),
        )

    @dg.asset(
        key=s.key("mixture_dataset"),
        deps=[s.key("mixture_blend"), *s.tokens_keys()],
        kinds={"numpy"},
        code_version=versioned(CODE, s.cfg.proxy.pack),
        description="A candidate's proxy blend packed (pack_tokens)",
        metadata={**headline("tokens"), **LEFT_OUT},
        **common,
    )
    def _dataset(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout, name = s.layout(storage), context.partition_key
        res = s.pack(layout, name)
        out = layout.mixture_proxy(s.stage.name, name) / "dataset"
        return materialize(
            tokens=res.tokens, train_sequences=res.splits["train"]["rows"], data_version=content_version(out)
        )

    @dg.asset(
        key=s.key("mixture_checkpoint"),
        deps=[s.key("mixture_dataset")],
        kinds={"pytorch"},
        pool="gpu",
        code_version=versioned(CODE, s.cfg.proxy.model, s.cfg.proxy.train),
        description="A candidate's proxy model, trained from scratch by the trainer (like any stage; not a model version)",
        metadata={**headline("final_val_loss"), **LEFT_OUT},
        **common,
    )
    def _checkpoint(
        context: dg.AssetExecutionContext, storage: LMStorage, trainer: dg.PipesSubprocessClient
    ) -> dg.MaterializeResult:
        return s.train(context, s.layout(storage), trainer, context.partition_key).get_materialize_result()

    @dg.asset(
        key=s.key("mixture_score"),
        deps=[s.key("mixture_checkpoint")],
        kinds={"python"},
        code_version=versioned(CODE, s.cfg.target, [s.evaluations[t.evaluation] for t in s.cfg.target]),
        description="A candidate proxy's target: weighted bits per byte on the target's evaluation sets",
        metadata={**headline("score"), **LEFT_OUT},
        **common,
    )
    def _score(context: dg.AssetExecutionContext, storage: LMStorage) -> dg.MaterializeResult:
        layout, name = s.layout(storage), context.partition_key
        score = s.score(layout, name)
        f = layout.mixture_proxy(s.stage.name, name) / mx.SCORE_FILE
        return materialize(
            score=score["score"], terms=score["terms"], path=f, data_version=content_version(f)
        )

    return [_blend, _dataset, _checkpoint, _score]


def recommendation_asset(s: _Search) -> dg.AssetsDefinition:
    @dg.asset(
        key=s.key("mixture_recommendation"),
        deps=[s.key("mixture_score"), s.key("mixture_candidates")]
        + [dg.AssetKey([k, x]) for k in ("tokens", "deduped") for x in s.sources],
        group_name=GROUP,
        kinds={"python", "pytorch"},
        pool="gpu",
        code_version=versioned(CODE, s.cfg, s.stage.blend),
        description=f"The mixture the predictor fitted on stage '{s.stage.name}''s proxies scores best, "
        "with its leave-one-out Spearman, a verification proxy and a predicted-vs-measured plot",
        metadata={
            **headline("loo_spearman", "predicted_score", "verified_score", "best_candidate_score"),
            **LEFT_OUT,
        },
    )
    def _recommendation(
        context: dg.AssetExecutionContext, storage: LMStorage, trainer: dg.PipesSubprocessClient
    ) -> dg.MaterializeResult:
        layout = s.layout(storage)
        d = layout.mixture_search(s.stage.name)
        plan = read_json(d / mx.CANDIDATES_FILE)
        bounds = {x: tuple(b) for x, b in plan["bounds"].items()}
        rec = recommend(
            mx.read_scores(layout.mixture_search(s.stage.name), s.stage.name, plan),
            bounds,
            s.cfg.predictor,
            s.cfg.ridge,
        )
        s.blend(layout, mx.VERIFY, rec.mixture)
        s.pack(layout, mx.VERIFY)
        s.train(context, layout, trainer, mx.VERIFY).get_materialize_result()  # its report is ours to drop
        out = mx.write_recommendation(d, rec.to_json(), s.score(layout, mx.VERIFY))
        png = (d / mx.PLOT_FILE).read_bytes() if (d / mx.PLOT_FILE).exists() else None
        return materialize(
            mixture=out["mixture"],
            loo_spearman=out["loo_spearman"],
            predicted_score=out["predicted_score"],
            verified_score=out["verification"]["score"],
            best_candidate_score=out["best_candidate"]["score"],
            verified_better_than_best_candidate=out["verified_better_than_best_candidate"],
            predictor=out["predictor"],
            candidates=_weights_table(out["candidates"]),
            plot=dg.MetadataValue.md(
                png_markdown(png, "predicted vs measured") if png else "(no matplotlib)"
            ),
            path=d / mx.RECOMMENDATION_FILE,
            data_version=content_version(d / mx.RECOMMENDATION_FILE),
        )

    return _recommendation


def build(recipe: Recipe) -> list[dg.AssetsDefinition]:
    """The mixture search of each stage that declares one."""
    out: list[dg.AssetsDefinition] = []
    for stage in recipe.stages:
        if stage.mixture_search is not None:
            s, parts = _Search(recipe, stage), partitions(recipe, stage)
            out += [candidates_asset(s, parts), *proxy_assets(s, parts), recommendation_asset(s)]
    return out
