"""One proxy run of a mixture search, through the platform's own steps: the blend (`data.blending.blend.blend_tokens`,
quality weighting inside a source's share included), the packed dataset (`data.blending.pack.pack_tokens`), the
trainer's job (`training.config.TrainJob`, a scratch model of the proxy's shape) and the score (bits per
byte from `evaluation.sets.run_on_model` on the target's evaluation sets). Nothing here is a second
implementation of those steps; the Dagster shell runs them one asset each (the trainer through its
launcher), `run_proxy` runs them in one process.

Files, under `<root>/<recipe>/mixture/<stage>/`: `candidates.json`, `<candidate>/{blend,dataset,checkpoint,
score.json}` per candidate (and `recommended/` for the verification proxy), `recommendation.json` and
`predicted_vs_measured.png`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from lm_platform.atomic import atomic_path, read_json, write_json
from lm_platform.data.blending.blend import TokenBlendResult, blend_tokens
from lm_platform.data.blending.pack import PackResult, pack_tokens
from lm_platform.data.blending.tokens import DOCS_FILE
from lm_platform.evaluation.models import load_model
from lm_platform.evaluation.sets import run_on_model
from lm_platform.mixture.search import effective_bounds, plot_png, recommend, sample_candidates
from lm_platform.recipe.schema import EvalConfig, MixtureSearchConfig, ProxyConfig, TargetTerm
from lm_platform.training.config import ScratchInit, TrainJob

CANDIDATES_FILE = "candidates.json"
RECOMMENDATION_FILE = "recommendation.json"
PLOT_FILE = "predicted_vs_measured.png"
SCORE_FILE = "score.json"
VERIFY = "recommended"  # the verification proxy's directory
# The proxy's trained model, inside its own directory: a proxy is not a model version, so nothing of it
# lives under (or is named like) the `checkpoint/` kind that versions, automation and leaderboard read.
PROXY_MODEL = "model"


def search_dir(base: str | Path, stage: str) -> Path:
    """A stage's mixture search under the recipe's storage base."""
    return Path(base) / "mixture" / stage


def proxy_dir(base: str | Path, stage: str, name: str) -> Path:
    """One proxy's blend, dataset, trained model and score."""
    return search_dir(base, stage) / name


def available_tokens(tokens_dirs: dict[str, str | Path], boundary_tokens: int) -> dict[str, float]:
    """Packed tokens each source holds (its documents' ids plus their boundary tokens)."""
    out = {}
    for s, d in tokens_dirs.items():
        col = pq.read_table(Path(d) / DOCS_FILE, columns=["tokens"]).column("tokens")
        out[s] = float(sum(col.to_pylist())) + boundary_tokens * len(col)
    return out


def centre_of(
    search: MixtureSearchConfig, stage_mixture: dict[str, float] | str, sources: list[str]
) -> dict[str, float]:
    """Where the candidates are drawn around: the stage's own shares of the searched sources, else
    uniform (a stage taking `mixture: recommended`, or sources the stage's mixture does not name)."""
    own = stage_mixture if isinstance(stage_mixture, dict) else {}
    shares = {s: float(own.get(s, 0.0)) for s in sources}
    if sum(shares.values()) <= 0 or any(v <= 0 for v in shares.values()):
        return {s: 1.0 / len(sources) for s in sources}
    total = sum(shares.values())
    return {s: v / total for s, v in shares.items()}


def plan_candidates(
    search: MixtureSearchConfig,
    sources: list[str],
    centre: dict[str, float],
    available: dict[str, float],
    out_file: str | Path,
    epoch_caps: dict[str, float] | None = None,
) -> dict:
    """Sample the search's candidates (names `c00`, `c01`, ...) within the bounds lowered to what each
    source holds, and write them to `out_file` (atomically). Returns what was written."""
    bounds = effective_bounds(search.bounds(sources), available, search.proxy.tokens, epoch_caps)
    mixtures = sample_candidates(centre, bounds, search.candidates, search.seed, search.concentration)
    width = max(2, len(str(len(mixtures) - 1)))
    plan = {
        "sources": list(bounds),
        "centre": centre,
        "bounds": {s: list(b) for s, b in bounds.items()},
        "seed": search.seed,
        "concentration": search.concentration,
        "proxy_tokens": search.proxy.tokens,
        "available_tokens": {s: available[s] for s in bounds},
        "candidates": [{"name": f"c{i:0{width}d}", "weights": w} for i, w in enumerate(mixtures)],
    }
    write_json(out_file, plan)
    return plan


def candidate_weights(plan: dict, name: str) -> dict[str, float]:
    for c in plan["candidates"]:
        if c["name"] == name:
            return c["weights"]
    raise KeyError(
        f"mixture search: no candidate '{name}' (candidates: {[c['name'] for c in plan['candidates']]})"
    )


def blend_proxy(
    weights: dict[str, float],
    tokens_dirs: dict[str, str | Path],
    proxy_tokens: int,
    out_dir: str | Path,
    seed: str,
    boundary_tokens: int,
    stage: str,
    epoch_caps: dict[str, float] | None = None,
    quality_weighting: dict | None = None,
    quality_scores: dict | None = None,
) -> TokenBlendResult:
    """The proxy's blend: `blend_tokens` with the candidate's weights as ratios and the proxy's budget as
    the target (quality weighting inside a source's share as the stage has it)."""
    ratios = {s: w for s, w in weights.items() if w > 0}
    return blend_tokens(
        {s: tokens_dirs[s] for s in ratios},
        ratios,
        proxy_tokens,
        out_dir,
        seed=seed,
        boundary_tokens=boundary_tokens,
        epoch_caps={s: (epoch_caps or {}).get(s, 1.0) for s in ratios},
        on_shortfall="record",
        stage=stage,
        quality_weighting={s: q for s, q in (quality_weighting or {}).items() if s in ratios},
        quality_scores={s: q for s, q in (quality_scores or {}).items() if s in ratios},
        mixture_from={"kind": "mixture_search_proxy", "weights": weights},
    )


def pack_proxy(
    blend_dir: str | Path,
    tokens_dirs: dict[str, str | Path],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    proxy: ProxyConfig,
) -> PackResult:
    """The proxy's packed dataset: `pack_tokens` with the proxy's `pack` settings."""
    cfg = proxy.pack
    return pack_tokens(
        blend_dir,
        tokens_dirs,
        tokenizer_dir,
        out_dir,
        seq_len=cfg.seq_len,
        val_fraction=cfg.val_fraction,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed,
        loss_mask=cfg.loss_mask,
    )


def proxy_job(
    recipe: str, stage: str, name: str, directory: str | Path, tokenizer_dir: str | Path, proxy: ProxyConfig
) -> TrainJob:
    """The trainer's job for one proxy: a scratch model of the proxy's shape on its dataset."""
    d = Path(directory)
    return TrainJob(
        recipe=recipe,
        stage=f"{stage}.{name}",
        dataset_dir=str(d / "dataset"),
        tokenizer_dir=str(tokenizer_dir),
        output_dir=str(d / PROXY_MODEL),
        run_dir=str(d / f"{PROXY_MODEL}.run"),
        init=ScratchInit(model=proxy.model),
        train=proxy.train,
    )


def score_model(
    model_dir: str | Path, target: tuple[TargetTerm, ...], evaluations: dict[str, EvalConfig]
) -> dict:
    """The search's target on one model: each term's bits per byte (its evaluation set, or one language of
    it) and their weighted mean, `score` (lower is better)."""
    model, tok = load_model(model_dir)
    results = {
        name: run_on_model(evaluations[name], model, tok)
        for name in dict.fromkeys(t.evaluation for t in target)
    }
    terms = []
    for t in target:
        res = results[t.evaluation]
        if t.language is not None:
            if t.language not in res["per_language"]:
                raise ValueError(
                    f"mixture_search target: evaluation '{t.evaluation}' has no '{t.language}' documents "
                    f"(languages: {sorted(res['per_language'])})"
                )
            res = res["per_language"][t.language]
        terms.append(
            {
                "evaluation": t.evaluation,
                "language": t.language,
                "weight": t.weight,
                "bits_per_byte": res["bits_per_byte"],
                "n": res["n"],
            }
        )
    total = sum(t["weight"] for t in terms)
    return {
        "score": sum(t["weight"] * t["bits_per_byte"] for t in terms) / total,
        "metric": "bits_per_byte",
        "terms": terms,
    }


def write_score(directory: str | Path, score: dict) -> Path:
    path = Path(directory) / SCORE_FILE
    write_json(path, score)
    return path


def read_scores(directory: str | Path, stage: str, plan: dict) -> list[dict]:
    """Each candidate of `plan` (proxies under the search `directory`) with its measured score; raises naming
    the candidates not scored yet."""
    out, missing = [], []
    for c in plan["candidates"]:
        f = Path(directory) / c["name"] / SCORE_FILE
        if not f.is_file():
            missing.append(c["name"])
            continue
        out.append({**c, "score": read_json(f)["score"]})
    if missing:
        raise ValueError(f"mixture search of stage '{stage}': candidates without a score yet: {missing}")
    return out


def write_recommendation(directory: str | Path, rec: dict, verification: dict | None) -> dict:
    """`recommendation.json` and the predicted-vs-measured plot, atomically. Returns the JSON written."""
    d = Path(directory)
    out = {**rec, "verification": verification}
    if verification is not None:
        best = rec["best_candidate"]["score"]
        out["verified_better_than_best_candidate"] = verification["score"] < best
    png = plot_png(rec, verification)
    if png:
        with atomic_path(d / PLOT_FILE) as tmp:
            tmp.write_bytes(png)
    write_json(d / RECOMMENDATION_FILE, out)
    return out


def recommended_mixture(directory: str | Path, stage: str) -> tuple[dict[str, float], dict]:
    """The ratios a stage with `mixture: recommended` blends (its search in `directory`), and the evidence
    recorded with them (for the manifest, the dataset card and the model card)."""
    f = Path(directory) / RECOMMENDATION_FILE
    if not f.is_file():
        raise FileNotFoundError(
            f"stage '{stage}' takes the recommended mixture, but {f} is missing: materialize mixture_recommendation/{stage}"
        )
    rec = read_json(f)
    ratios = {s: w for s, w in rec["mixture"].items() if w > 0}
    evidence = {
        "kind": "recommended",
        "asset": f"mixture_recommendation/{stage}",
        "mixture": rec["mixture"],
        "candidates": len(rec["candidates"]),
        "predictor": rec["predictor"]["kind"],
        "loo_spearman": rec["loo_spearman"],
        "predicted_score": rec["predicted_score"],
        "verified_score": (rec.get("verification") or {}).get("score"),
        "best_candidate_score": rec["best_candidate"]["score"],
    }
    return ratios, evidence


def run_proxy(
    name: str,
    weights: dict[str, float],
    search: MixtureSearchConfig,
    base: str | Path,
    stage: str,
    tokens_dirs: dict[str, str | Path],
    tokenizer_dir: str | Path,
    evaluations: dict[str, EvalConfig],
    boundary_tokens: int,
    seed: str = "0",
    recipe: str = "recipe",
) -> dict:
    """Blend, pack, train (the trainer in this process) and score one proxy; returns its score."""
    from lm_platform.training.train import train

    d = proxy_dir(base, stage, name)
    blend_proxy(
        weights, tokens_dirs, search.proxy.tokens, d / "blend", f"{seed}:{name}", boundary_tokens, stage
    )
    pack_proxy(d / "blend", tokens_dirs, tokenizer_dir, d / "dataset", search.proxy)
    train(proxy_job(recipe, stage, name, d, tokenizer_dir, search.proxy))
    score = score_model(d / PROXY_MODEL, search.target, evaluations)
    write_score(d, score)
    return score


def search_in_process(
    search: MixtureSearchConfig,
    sources: list[str],
    centre: dict[str, float],
    base: str | Path,
    stage: str,
    tokens_dirs: dict[str, str | Path],
    tokenizer_dir: str | Path,
    evaluations: dict[str, EvalConfig],
    boundary_tokens: int,
    seed: str = "0",
) -> dict:
    """The whole search in one process (what the assets do one step each): candidates, their proxies,
    the fit, the recommended mixture and its verification proxy. Returns `recommendation.json`'s content."""
    d = search_dir(base, stage)
    plan = plan_candidates(
        search, sources, centre, available_tokens(tokens_dirs, boundary_tokens), d / CANDIDATES_FILE
    )
    args = (search, base, stage, tokens_dirs, tokenizer_dir, evaluations, boundary_tokens, seed)
    for c in plan["candidates"]:
        run_proxy(c["name"], c["weights"], *args)
    bounds = {s: tuple(b) for s, b in plan["bounds"].items()}
    rec = recommend(read_scores(d, stage, plan), bounds, search.predictor, search.ridge).to_json()
    verification = run_proxy(VERIFY, rec["mixture"], *args)
    return write_recommendation(d, rec, verification)
