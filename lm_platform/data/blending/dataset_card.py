"""A dataset card (markdown) for one blend: what is in it, under which licenses, and how it was made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_platform.atomic import atomic_path, read_json
from lm_platform.data.curation.quality_model import describe, read_reports
from lm_platform.recipe.schema import Recipe

CARD_FILE = "README.md"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:,.0f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return "" if v is None else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return out


def _mixture_line(manifest: dict) -> str:
    """Which mixture the blend took: the recipe's, or a mixture search's recommendation with its evidence."""
    origin = manifest.get("mixture_from") or {}
    if origin.get("kind") == "recommended":
        verified = origin.get("verified_score")
        return (
            f"recommended by `{origin.get('asset')}` ({origin.get('candidates')} proxy runs, "
            f"{origin.get('predictor')} predictor, leave-one-out Spearman {origin.get('loo_spearman'):.2f}; "
            f"predicted {origin.get('predicted_score'):.4f} bits per byte"
            + (f", verified {verified:.4f}" if verified is not None else "")
            + f", best sampled candidate {origin.get('best_candidate_score'):.4f})"
        )
    if origin.get("kind") == "mixture_search_proxy":
        return "a mixture search's candidate (a proxy run)"
    return "the recipe's"


def dataset_card(
    recipe: Recipe,
    stage: str,
    manifest: dict,
    dedup: dict[str, dict] | None = None,
    quality: dict[str, list[dict]] | None = None,
) -> str:
    """Markdown card: sources (ratio, target, taken, epochs), licenses, filters per language, the quality
    model's step and buckets (`quality`: source -> its curated files' quality reports), dedup and
    decontamination figures per source (`dedup`: source -> figures from the deduped stage)."""
    cfg = recipe.stage(stage)
    lines = [
        f"# Dataset card: {recipe.name} / blend `{stage}`",
        "",
        f"{recipe.description}".strip(),
        "",
        "## Summary",
        "",
        f"- documents: {manifest['docs']:,}",
        f"- tokens (exact, packed): {manifest['taken_tokens']:,} of a target of {manifest['target_tokens']:,}",
        f"- token count: {manifest['token_count']}",
        f"- seed: `{manifest.get('seed', '')}`; upsampling: {'on' if cfg.blend.upsample else 'off'}",
    ]
    lines.append(f"- mixture: {_mixture_line(manifest)}")
    short = manifest.get("shortfall") or {}
    if short.get("tokens"):
        lines.append(
            f"- **shortfall**: {short['tokens']:,} tokens ({short['fraction']:.1%} of the target) — {short['note']}"
        )
    lines += ["", "## Sources", ""]
    rows = []
    for r in manifest["sources"]:
        src = recipe.source(r["source"])
        rows.append(
            {**r, "license": src.license, "language": src.language, "origin": src.origin or src.location}
        )
    lines += _table(
        rows,
        [
            "source",
            "group",
            "language",
            "license",
            "ratio",
            "target_tokens",
            "available_tokens",
            "taken_tokens",
            "taken_docs",
            "share",
            "epochs",
            "chars_per_token",
            "origin",
        ],
    )
    lines += ["", "## Licenses", ""]
    lines += _table(manifest["licenses"], ["license", "docs", "tokens", "share"])
    allowed = set(recipe.license_allowlist)
    bad = [r["license"] for r in manifest["licenses"] if r["license"] not in allowed]
    lines += [
        "",
        f"Allowlist: {', '.join(sorted(allowed))}. "
        + (
            f"**Not allowed: {', '.join(bad)}** (the blend's blocking check fails)."
            if bad
            else "All allowed."
        ),
        "",
        "## Filters",
        "",
    ]
    langs = sorted({recipe.source(r["source"]).language for r in manifest["sources"]})
    for lang in langs:
        lc = recipe.languages[lang]
        filters = ", ".join(
            f.name + "(" + ", ".join(f"{k}={v}" for k, v in f.model_dump().items() if k != "name") + ")"
            for f in lc.filters
        )
        lines.append(f"- `{lang}`: {lc.unicode_form}; {filters or 'no filters'}")
    lines += _quality_section(manifest, quality or {})
    near = recipe.dedup.near
    dc = recipe.decontamination
    lines += [
        "",
        "## Deduplication and decontamination",
        "",
        f"- exact: hash of the normalised text, persistent `{recipe.dedup.exact.index}` index "
        f"({recipe.dedup.exact.partitions} hash-prefix partitions); priority decides which copy stays",
        "- near: "
        + (
            f"MinHash LSH, {near.bands} bands x {near.rows} rows, threshold {near.threshold}, word "
            f"{near.word_ngram}-grams (character {near.char_ngram}-grams for {', '.join(near.char_languages)}), "
            f"candidates verified: {near.verify}"
            if near is not None and near.enabled
            else "off"
        ),
        "- decontamination: "
        + (
            f"{dc.ngram}-gram overlap (character {dc.char_ngram}-grams for {', '.join(dc.char_languages)}) with "
            f"{', '.join(dc.evaluations or [e.name for e in recipe.evaluations]) or 'no evaluation sets'}: "
            f"a document reproducing at least {dc.min_share:.0%} of an item"
            + (f" (or {dc.min_copied_words} of its words)" if dc.min_copied_words else "")
            + f", n-grams in {dc.frequent_docs}+ documents of a source ignored as templates"
            if dc is not None and dc.enabled
            else "off"
        ),
        "",
    ]
    if dedup:
        drows = [
            {"source": s, **v} for s, v in dedup.items() if s in {r["source"] for r in manifest["sources"]}
        ]
        lines += _table(
            drows,
            [
                "source",
                "docs_in",
                "exact_removed",
                "cross_source_removed",
                "near_removed",
                "contaminated_removed",
                "docs_out",
            ],
        )
        lines.append("")
    return "\n".join(lines)


def _quality_section(manifest: dict, quality: dict[str, list[dict]]) -> list[str]:
    """The quality model's step per scored source (rule, kept share, threshold, scores) and the blend's
    quality buckets."""
    buckets = [
        {"source": r["source"], **b} for r in manifest["sources"] for b in r.get("quality_buckets", [])
    ]
    if not quality and not buckets:
        return []
    lines = ["", "## Quality model", ""]
    lines += [f"- {describe(source, reports)}" for source, reports in quality.items()]
    if buckets:
        lines += ["", "Blend weighting by quality bucket (best first; the last bucket is the rest):", ""]
        lines += _table(
            buckets,
            ["source", "bucket", "top_share", "weight", "min_score", "available_tokens", "target_tokens",
             "taken_tokens", "epochs"],
        )  # fmt: skip
    return lines


def write_dataset_card(
    recipe: Recipe,
    stage: str,
    manifest: dict,
    figures_dir: str | Path,
    out: str | Path,
    curated_dir: str | Path | None = None,
) -> Path:
    """Write the card of a blend to `out` (atomically), with the dedup figures the deduped stage left in
    `figures_dir` (`<source>.json`) for the stage's sources, and the quality reports of its scored sources'
    curated files under `curated_dir`."""
    figures_dir = Path(figures_dir)
    figures = {
        s: read_json(figures_dir / f"{s}.json")
        for s in recipe.stage(stage).blend.mixture_sources()
        if (figures_dir / f"{s}.json").exists()
    }
    quality = {
        s: read_reports(curated_dir, s)
        for s in recipe.stage(stage).blend.mixture_sources()
        if curated_dir is not None and recipe.source(s).quality is not None
    }
    with atomic_path(out) as tmp:
        tmp.write_text(dataset_card(recipe, stage, manifest, figures, quality), encoding="utf-8")
    return Path(out)
