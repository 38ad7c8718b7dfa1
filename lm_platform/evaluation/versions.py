"""Model versions: every model the platform produces, named by one key.

Keys: `<stage>` (a stage's exported checkpoint), `<stage>@step_<N>` (a step checkpoint the recipe keeps
for evaluation: N a multiple of the stage's `eval_every`), `adapter/<name>` and `merged/<name>` (from
fine-tuning and merging). A kept step checkpoint is snapshotted into `models/<key>/` (hard links
where the file system allows, else copies) when it is registered, so the trainer's own pruning of its
resume checkpoints (`keep_last`) never removes a version that is registered for scoring; the snapshot is
deleted only by `release_step`.

Score identity: a key names whatever weights lie at its model directory now. Every score records the
weights it scored (`weights_hash`: the safetensors and config.json, hashed). When a stage is retrained its
keys stay and name the new weights: a step snapshot whose run was retrained is moved to
`models/.superseded/` and taken again from the new run (`keep_step`), and a score of other weights
is moved to `eval/history/<benchmark>/` when the version is scored again (`supersede_result`).
Registering versions (`supersede_stale`) moves the scores a retrain made stale at once, so every score
under `eval/<benchmark>/` is of the weights its version names; readers also check (`current_result`).

Every path here comes from the recipe's `paths.Layout` (its block for model versions and evaluations).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from lm_platform.atomic import atomic_dir, read_json, write_json
from lm_platform.evaluation.sets import run_evaluation
from lm_platform.evaluation.stats import with_previous
from lm_platform.paths import Layout

STEP_KEY = re.compile(r"^(?P<stage>[A-Za-z0-9_.-]+)@step_(?P<step>\d+)$")
PREFIXED = ("adapter", "merged")
STEP_DIR = re.compile(r"^step_(\d{8})$")
# Files of a step checkpoint that make a loadable model; the optimizer state is not needed to score.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "eeve.json",
    "trainer_state.json",
)
# What a version's weights are: the files that decide its outputs (never times, logs or metrics).
WEIGHT_PATTERNS = ("*.safetensors", "config.json")


@dataclass(frozen=True)
class Version:
    key: str
    kind: str  # stage | step | adapter | merged
    name: str  # the stage (stage, step) or the adapter / merge name
    step: int | None = None


def step_key(stage: str, step: int) -> str:
    return f"{stage}@step_{step}"


def parse_key(key: str) -> Version:
    """The parts of a version key; a malformed key raises ValueError naming it."""
    if m := STEP_KEY.match(key):
        return Version(key, "step", m.group("stage"), int(m.group("step")))
    if "/" in key:
        prefix, _, name = key.partition("/")
        if prefix in PREFIXED and name:
            return Version(key, prefix, name)
        raise ValueError(f"model version '{key}': a prefixed key is adapter/<name> or merged/<name>")
    if re.fullmatch(r"[A-Za-z0-9_.-]+", key):
        return Version(key, "stage", key)
    raise ValueError(
        f"model version '{key}' is not <stage>, <stage>@step_<N>, adapter/<name> or merged/<name>"
    )


def model_dir(layout: Layout, key: str) -> Path:
    """Where version `key`'s HF model directory lies."""
    v = parse_key(key)
    if v.kind == "stage":
        return layout.checkpoint(v.name)
    if v.kind == "step":
        return layout.model_snapshot(key)
    return layout.adapter(v.name) if v.kind == "adapter" else layout.merged(v.name)


def tokens_seen(path: Path) -> int | None:
    """Training tokens the version has seen (its metrics or trainer state), None when unknown."""
    for name in ("metrics.json", "trainer_state.json"):
        f = Path(path) / name
        if f.is_file():
            value = read_json(f).get("tokens_seen")
            if value is not None:
                return int(value)
    return None


def eval_steps(run_dir: Path, eval_every: int) -> list[tuple[int, Path]]:
    """Complete step checkpoints of a run directory whose step is a multiple of `eval_every`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or eval_every <= 0:
        return []
    found = []
    for p in run_dir.iterdir():
        m = STEP_DIR.match(p.name)
        if m and int(m.group(1)) % eval_every == 0 and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def weights_hash(path: Path) -> str | None:
    """A hash of a model directory's weights and config (names and bytes), None without a model there."""
    path = Path(path)
    files = sorted({f for p in WEIGHT_PATTERNS for f in path.glob(p) if f.is_file()})
    if not any(f.suffix == ".safetensors" for f in files):
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 23):
                h.update(chunk)
    return h.hexdigest()[:16]


def version_weights(layout: Layout, key: str) -> str | None:
    """The weights hash of what version `key` names now (None when its model is absent)."""
    return weights_hash(model_dir(layout, key))


def keep_step(layout: Layout, stage: str, step: int, step_dir: Path) -> Path:
    """Snapshot a step checkpoint as version `<stage>@step_<step>`; returns its directory. Idempotent for
    the same weights; a snapshot of other weights (the stage was retrained) is moved to
    `models/.superseded/<key>-<weights>/` first, never deleted."""
    target = model_dir(layout, step_key(stage, step))
    if (target / "config.json").is_file():
        old = weights_hash(target)
        if old == weights_hash(step_dir):
            return target
        aside = layout.superseded_snapshots() / f"{target.name}-{old}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        if aside.exists():
            shutil.rmtree(target)  # the same weights are already kept aside
        else:
            os.replace(target, aside)
    with atomic_dir(target) as tmp:
        for name in MODEL_FILES:
            src = Path(step_dir) / name
            if src.is_file():
                try:
                    os.link(src, tmp / name)
                except OSError:
                    shutil.copy2(src, tmp / name)
    return target


def release_step(layout: Layout, key: str) -> None:
    """Delete a step version's snapshot (after it is unregistered)."""
    v = parse_key(key)
    if v.kind != "step":
        raise ValueError(f"'{key}' is not a step version")
    shutil.rmtree(model_dir(layout, key), ignore_errors=True)


def new_step_versions(
    layout: Layout, stage: str, run_dir: Path, eval_every: int | None, known: set[str]
) -> list[str]:
    """Snapshot the kept step checkpoints of a stage's run; the keys not registered yet. A registered key
    whose run was retrained (other weights at that step) is snapshotted again (`keep_step`)."""
    if not eval_every:
        return []
    keys = []
    for step, path in eval_steps(run_dir, eval_every):
        key = step_key(stage, step)
        if key in known and weights_hash(model_dir(layout, key)) == weights_hash(path):
            continue
        keep_step(layout, stage, step, path)
        if key not in known:
            keys.append(key)
    return keys


def stage_chain(stage: str, init_from: dict[str, str]) -> list[str]:
    """The stages a stage's model descends from, oldest first, ending with the stage itself."""
    chain = [stage]
    while (parent := init_from.get(chain[0])) and parent != "model" and parent not in chain:
        chain.insert(0, parent)
    return chain


def predecessor(key: str, versions: list[str], init_from: dict[str, str]) -> str | None:
    """The registered version that `key` is compared with: the one before it in its stage chain, where
    each stage contributes its kept steps (ascending) and then its export (`init_from`: stage -> the
    earlier stage it starts from, or 'model'). None for the first version, adapters and merges."""
    v = parse_key(key)
    if v.kind not in ("stage", "step"):
        return None
    chain = stage_chain(v.name, init_from)
    ordered = [k for k in chain_order(list(set(versions) | {key}), chain) if _in_chain(k, chain)]
    i = ordered.index(key)
    return ordered[i - 1] if i > 0 else None


def _in_chain(key: str, chain: list[str]) -> bool:
    v = parse_key(key)
    return v.kind in ("stage", "step") and v.name in chain


def chain_order(versions: list[str], stage_order: list[str]) -> list[str]:
    """Versions sorted along the training chain: per stage in recipe order its steps then its export;
    adapters and merges last, by name."""

    def rank(key: str) -> tuple:
        v = parse_key(key)
        if v.kind in ("step", "stage"):
            s = stage_order.index(v.name) if v.name in stage_order else len(stage_order)
            return (0, s, v.step if v.step is not None else float("inf"), key)
        return (1, 0, 0, key)

    return sorted(versions, key=rank)


def discover_versions(recipe, layout: Layout, known: set[str]) -> list[str]:
    """Versions on disk that are not in `known`: stage exports, kept step checkpoints (snapshotted now, so
    the trainer's pruning cannot remove them), adapters and merged models."""
    found: list[str] = []
    for stage in recipe.stages:
        if stage.eval_every:  # (under an object store, asking for the run directory fills it)
            run_dir = layout.run_dir(stage.name)
            found += new_step_versions(layout, stage.name, run_dir, stage.eval_every, known)
        if stage.name not in known and (model_dir(layout, stage.name) / "config.json").is_file():
            found.append(stage.name)
    for kind, kind_dir in zip(PREFIXED, (layout.adapters(), layout.merges()), strict=True):
        for cfg in sorted(kind_dir.glob("*/config.json")) if kind_dir.is_dir() else []:
            key = f"{kind}/{cfg.parent.name}"
            if key not in known:
                found.append(key)
    return found


def scored_result(layout: Layout, benchmark: str, version: str | None) -> dict | None:
    """A stored result, or None when that version was not scored on that benchmark (whatever weights it
    scored: readers that compare use `current_result`)."""
    if version is None:
        return None
    path = layout.eval_result(benchmark, version)
    return read_json(path) if path.is_file() else None


def current_result(layout: Layout, benchmark: str, version: str | None) -> dict | None:
    """The stored result of `version` if it scored the weights the version names now, else None (not
    scored, scored before the stage was retrained, or scored before scores recorded their weights)."""
    res = scored_result(layout, benchmark, version)
    if res is None:
        return None
    now = version_weights(layout, version)
    return res if now is not None and res.get("weights") == now else None


def supersede_result(layout: Layout, benchmark: str, version: str, weights: str | None) -> Path | None:
    """Before `version` is scored on new weights: move its stored result of other weights to the history
    (`<version>.<weights or 'unrecorded'>.json`, slashes as '__'); returns where it went, or None when
    there was nothing to move (no result, or one of the same weights)."""
    src = layout.eval_result(benchmark, version)
    if not src.is_file():
        return None
    old = read_json(src)
    if weights is not None and old.get("weights") == weights:
        return None
    target = (
        layout.eval_history(benchmark)
        / f"{version.replace('/', '__')}.{old.get('weights') or 'unrecorded'}.json"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, {**old, "superseded_by_weights": weights})
    src.unlink()
    return target


def history(layout: Layout, benchmark: str, version: str) -> list[dict]:
    """The superseded scores of `version` on `benchmark` (each with the weights it scored)."""
    d = layout.eval_history(benchmark)
    prefix = version.replace("/", "__") + "."
    return [read_json(f) for f in sorted(d.glob("*.json")) if f.name.startswith(prefix)] if d.is_dir() else []


def current_results(layout: Layout, benchmark: str) -> dict[str, dict]:
    """version -> result, for every stored result of `benchmark` that scored its version's weights now."""
    d = layout.eval_results(benchmark)
    out = {}
    for f in sorted(d.rglob("*.json")) if d.is_dir() else []:
        version = str(f.relative_to(d).with_suffix(""))
        res = current_result(layout, benchmark, version)
        if res is not None:
            out[version] = res
    return out


def supersede_stale(
    layout: Layout, benchmarks: list[str], versions: list[str]
) -> list[tuple[str, str, Path]]:
    """Move every stored score of other weights than its version names now (the version was retrained or
    its model removed) to the history: (benchmark, version, where it went) for each. After this, every score
    under `eval/<benchmark>/` is of the weights its version names."""
    moved = []
    for bench in benchmarks:
        for version in versions:
            res = scored_result(layout, bench, version)
            if res is None:
                continue
            now = version_weights(layout, version)
            if res.get("weights") != now or now is None:
                target = supersede_result(layout, bench, version, now)
                if target is not None:
                    moved.append((bench, version, target))
    return moved


def score_version(
    ev, layout: Layout, version: str, previous_version: str | None, seed: int, code_version: str
) -> tuple[dict, Path | None, bool]:
    """Score `version` on evaluation `ev` and store the result (with the weights it scored and the scoring
    `code_version`); compared only with the current score of `previous_version`, and only when both
    scores are of the same metric. A stored score of the same
    weights and code version is reused (only the comparison is redone); one of other weights moves to the
    history first. Returns the result, where a superseded score went (or None), and whether it was reused."""

    path = model_dir(layout, version)
    weights = weights_hash(path)
    previous = current_result(layout, ev.name, previous_version)
    stored = current_result(layout, ev.name, version)
    reused = stored is not None and stored.get("code_version") == code_version
    if reused:
        fresh = {k: v for k, v in stored.items() if k not in ("previous_version", "previous_score", "delta")}
    else:
        fresh = run_evaluation(ev, path, seed=seed)
    if previous is not None and previous.get("metric") != fresh.get("metric"):
        # A score of another metric (a perplexity stored before bits per byte became the headline) is no
        # baseline: comparing the two would report a change of unit as a regression or a gain.
        previous = None
    result = with_previous(fresh, previous and previous["score"], previous_version)
    result.update(
        version=version,
        model=str(path),
        tokens_seen=tokens_seen(path),
        weights=weights,
        code_version=code_version,
    )
    moved = supersede_result(layout, ev.name, version, weights)
    write_json(layout.eval_result(ev.name, version), result)
    return result, moved, reused
