"""A model's lineage, read from what the platform wrote (packed datasets' index.json, adapter.json,
merge.json, dedup figures, evaluation results), and the model card written from it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from lm_platform.data.curation.quality_model import describe as quality_describe
from lm_platform.data.curation.quality_model import read_reports as quality_reports
from lm_platform.storage import cache as store_cache

SHARE_ALIKE = ("-SA", "ODbL", "GPL")
ATTRIBUTION = ("CC-BY", "ODC-By")
PACKAGES = (
    "lm_platform",
    "torch",
    "transformers",
    "peft",
    "mergekit",
    "tokenizers",
    "safetensors",
    "dagster",
)


@dataclass
class Lineage:
    """Everything that reached one model: stages with their exact tokens per source, adapters, merges."""

    stages: list = field(
        default_factory=list
    )  # {stage, init_from, settings, tokens, val_tokens, sources: {s: tokens}, fingerprint} (train split)
    adapters: list = field(default_factory=list)
    merges: list = field(default_factory=list)
    instruction_sets: list = field(default_factory=list)

    def licenses(self, recipe: Any) -> dict[str, dict[str, int]]:
        """license -> {source or instruction set: tokens} over every stage and instruction set."""
        out: dict[str, dict[str, int]] = {}
        for st in self.stages:
            for src, n in st["sources"].items():
                lic = recipe.source(src).license
                out.setdefault(lic, {})[src] = out.get(lic, {}).get(src, 0) + n
        for s in self.instruction_sets:
            out.setdefault(s["license"], {})[s["name"]] = s["target_tokens"]
        return out


def _read_json(path: Path) -> dict:
    """A JSON file the card reads ({} when absent). Under an object-store root, the store's committed
    copy: the export may run where the packed datasets, blends and dedup figures were never filled."""
    data = store_cache.read_committed(path)
    return json.loads(data) if data is not None else {}


def _dir_fingerprint(path: Path) -> str:
    """sha256 over a packed dataset's index.json (its exact counts and shard list)."""
    data = store_cache.read_committed(path / "index.json")
    return hashlib.sha256(data).hexdigest()[:16] if data is not None else ""


def _stage_mixture(stage: Any, base: Path) -> dict:
    """A stage's mixture as its card states it: the recipe's shares, or (`mixture: recommended`) the shares
    its blend took from the mixture search, with the search's evidence from the blend's manifest."""
    if not stage.blend.recommended:
        return dict(stage.blend.mixture)
    manifest = _read_json(base / "blend" / stage.name / "manifest.json")
    evidence = manifest.get("mixture_from") or {}
    return {
        "recommended": manifest.get("ratios", {}),
        **{
            k: evidence.get(k)
            for k in (
                "asset",
                "candidates",
                "loo_spearman",
                "predicted_score",
                "verified_score",
                "best_candidate_score",
            )
        },
    }


def lineage(recipe: Any, ref: str, base: Path) -> Lineage:
    """Walk a model reference back to the stages it came from."""
    lin = Lineage()
    seen: set[str] = set()

    def stage_chain(name: str) -> None:
        while name != "model" and name not in seen:
            seen.add(name)
            st = recipe.stage(name)
            ds = base / "dataset" / name
            index = _read_json(ds / "index.json")
            train = index.get("splits", {}).get("train", {})
            lin.stages.insert(
                0,
                {
                    "stage": name,
                    "init_from": st.init_from,
                    "settings": {
                        "mixture": _stage_mixture(st, base),
                        "seq_len": st.pack.seq_len,
                        "lr": st.train.lr,
                        "epochs": st.train.epochs,
                        "schedule": st.train.schedule,
                        "trainable": st.train.trainable,
                    },
                    # What trained the model: the train split (held-out validation rows never did).
                    "tokens": train.get("tokens", 0),
                    "val_tokens": index.get("splits", {}).get("val", {}).get("tokens", 0),
                    "sources": {s: n for s, n in train.get("sources", {}).items() if n},
                    "fingerprint": _dir_fingerprint(ds),
                },
            )
            name = st.init_from

    def walk(r: str) -> None:
        if r in seen:
            return
        kind, _, name = r.partition("/")
        if kind == "checkpoint":
            stage_chain(name)
            return
        seen.add(r)
        if kind == "adapter":
            ft = recipe.finetune
            s = next(x for x in ft.instructions if x.name == name)
            info = _read_json(base / r / "adapter.json")
            lin.adapters.append(
                {
                    "name": name,
                    "base": ft.base,
                    **{
                        k: info.get(k)
                        for k in (
                            "rank",
                            "alpha",
                            "dropout",
                            "target_modules",
                            "steps",
                            "initial_loss",
                            "final_loss",
                            "examples",
                            "target_tokens",
                        )
                    },
                }
            )
            lin.instruction_sets.append(
                {
                    "name": name,
                    "license": s.license,
                    "language": s.language,
                    "format": s.format,
                    "origin": s.origin,
                    "target_tokens": info.get("target_tokens", 0),
                    "fingerprint": hashlib.sha256(Path(s.location).read_bytes()).hexdigest()[:16],
                }
            )
            walk(ft.base)
        elif kind == "merged":
            m = next(x for x in recipe.merges if x.name == name)
            lin.merges.append(
                {
                    "name": name,
                    "method": m.method,
                    "base": m.base,
                    "seed": m.seed,
                    "models": [x.model_dump(by_alias=True, exclude_none=True) for x in m.models],
                }
            )
            walk(m.base)
            for x in m.models:
                walk(x.model)

    walk(ref)
    return lin


def git_commit(path: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = pkg_metadata.version(p)
        except pkg_metadata.PackageNotFoundError:
            continue
    return out


def model_card(
    recipe: Any,
    name: str,
    ref: str,
    lin: Lineage,
    base: Path,
    recipe_file: str,
    scores: dict[str, Any],
    scored: str | None = None,
) -> str:
    """The README.md of an export: sources and licenses with tokens per stage, attribution notices,
    share-alike warning, filters, dedup figures, stages, adapters, merges, scores, provenance. `scored`
    says whose scores `scores` are (the model version and the weights they scored)."""
    licenses = lin.licenses(recipe)
    sa = sorted(lic for lic in licenses if any(t in lic for t in SHARE_ALIKE))
    lines = [
        "---",
        f"license: {declared_license(licenses)}",
        "library_name: transformers",
        "tags: [lm_platform]",
        "---",
        "",
        f"# {recipe.name}/{name}",
        "",
        f"Exported from `{ref}` by lm_platform (recipe `{recipe.name}`).",
        "",
    ]
    if sa:
        lines += [
            "> **Share-alike warning:** material under " + ", ".join(sa) + " reached these weights. "
            "Whether weights trained on share-alike text must carry the same license is unsettled; "
            "distribute them under compatible terms and keep the notices below.",
            "",
        ]
    lines += ["## Sources and licenses", "", "| source | license | stage | tokens |", "|---|---|---|---|"]
    for st in lin.stages:
        for src, n in sorted(st["sources"].items()):
            lines.append(f"| {src} | {recipe.source(src).license} | {st['stage']} | {n} |")
    for s in lin.instruction_sets:
        lines.append(
            f"| {s['name']} (instructions) | {s['license']} | adapter/{s['name']} | {s['target_tokens']} |"
        )
    lines += ["", "Licenses that reached the model: " + ", ".join(sorted(licenses)), ""]
    notices = []
    for lic, members in sorted(licenses.items()):
        if any(lic.startswith(t) for t in ATTRIBUTION):
            for member in sorted(members):
                origin = _origin(recipe, member, lin)
                notices.append(f"- {member}: {origin}, licensed under {lic}.")
    if notices:
        lines += ["## Attribution notices", "", *notices, ""]
    lines += ["## Filters", ""]
    for lang, cfg in recipe.languages.items():
        lines.append(f"- {lang}: " + ", ".join(f.name for f in cfg.filters))
    for src in sorted({s for st in lin.stages for s in st["sources"]}):  # the quality model's step
        if getattr(recipe.source(src), "quality", None) is not None:
            lines.append("- quality " + quality_describe(src, quality_reports(base / "curated", src)))
    lines += ["", "## Deduplication", ""]
    figs = base / "dedup" / "figures"
    used = sorted({s for st in lin.stages for s in st["sources"]})
    for src in used:
        d = _read_json(figs / f"{src}.json")
        if d:
            lines.append(
                f"- {src}: " + ", ".join(f"{k}={v}" for k, v in d.items() if isinstance(v, (int, float)))
            )
    lines += [
        "",
        "## Training stages",
        "",
        "Tokens are the train split's (held-out validation tokens, never trained on, beside them).",
        "",
        "| stage | init from | tokens | validation tokens | settings |",
        "|---|---|---|---|---|",
    ]
    for st in lin.stages:
        lines.append(
            f"| {st['stage']} | {st['init_from']} | {st['tokens']} | {st.get('val_tokens', 0)} "
            f"| `{json.dumps(st['settings'])}` |"
        )
    if lin.adapters:
        lines += ["", "## Adapters (LoRA)", ""]
        for a in lin.adapters:
            lines.append(
                f"- adapter/{a['name']} on {a['base']}: "
                + json.dumps({k: v for k, v in a.items() if k not in ("name", "base")})
            )
    if lin.merges:
        lines += ["", "## Merges (mergekit)", ""]
        for m in lin.merges:
            lines.append(
                f"- merged/{m['name']}: {m['method']} over base {m['base']} (seed {m['seed']}): "
                + json.dumps(m["models"])
            )
    if scores or scored:
        lines += ["", "## Evaluation", ""] + ([scored, ""] if scored else [])
    if scores:
        lines += ["| benchmark | score |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(scores.items())]
    lines += [
        "",
        "## Provenance",
        "",
        f"- recipe file: {recipe_file}",
        f"- git commit: {git_commit(Path(__file__).parent)}",
        "- packages: " + ", ".join(f"{k}=={v}" for k, v in package_versions().items()),
        "- dataset fingerprints (sha256 of index.json / instruction file): "
        + ", ".join(
            [f"{st['stage']}={st['fingerprint']}" for st in lin.stages]
            + [f"{s['name']}={s['fingerprint']}" for s in lin.instruction_sets]
        ),
        "",
    ]
    return "\n".join(lines)


def _origin(recipe: Any, member: str, lin: Lineage) -> str:
    for s in lin.instruction_sets:
        if s["name"] == member:
            return s["origin"] or "instruction set"
    src = recipe.source(member)
    return src.origin or src.location


def declared_license(licenses: dict[str, dict[str, int]]) -> str:
    """One license when every input shares it, else 'other' (the card lists them all)."""
    return next(iter(licenses)).lower() if len(licenses) == 1 else "other"
