"""Blend sources into one training stage's document set by token share.

Tokens are estimated from characters (chars per token of the source's language from the recipe, or
measured on an earlier `dataset/<stage>` when the caller passes it). Ratios may name groups of sources;
a group's share is split among its members in proportion to their available tokens. When a source
cannot fill its share, it gives all it has (up to its epoch cap when upsampling) and the shortfall is
shared among the other sources in proportion to their ratios. When all sources together cannot meet
the target, the blend holds what there is and the manifest says how much is missing (or, with
`on_shortfall="error"`, nothing is written and `BlendShortfall` is raised). The selection is seeded
and deterministic: the same inputs and seed give the same documents in the same order.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.data.documents import DocWriter, iter_docs
from lm_platform.results import JsonResult

BLEND_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass
class SourceShare:
    source: str
    ratio: float
    target_tokens: float
    available_tokens: float
    available_docs: int
    taken_tokens: float = 0.0
    taken_docs: int = 0
    epochs: float = 0.0
    share: float = 0.0
    group: str | None = None
    epoch_cap: float = 1.0
    capacity_tokens: float = 0.0
    exhausted: bool = False
    taken_chars: int = 0
    chars_per_token: float = 0.0
    repeated_docs: int = 0


def allocate(ratios: dict[str, float], available: dict[str, float], total: float) -> dict[str, float]:
    """Token targets per source: `ratio * total`, with the share of exhausted sources redistributed to
    the others in proportion to their ratios."""
    targets: dict[str, float] = {}
    open_sources = dict(ratios)
    remaining = float(total)
    while open_sources:
        weight = sum(open_sources.values())
        exhausted = {s: r for s, r in open_sources.items() if available[s] < remaining * r / weight}
        if not exhausted:
            for s, r in open_sources.items():
                targets[s] = remaining * r / weight
            break
        for s in exhausted:
            targets[s] = available[s]
            remaining -= available[s]
            del open_sources[s]
    return targets


class BlendShortfall(ValueError):
    """The sources cannot meet a stage's target (within their epoch caps) and the stage asked to fail."""


def expand_groups(
    mixture: dict[str, float], groups: dict[str, tuple[str, ...]], available: dict[str, float]
) -> tuple[dict[str, float], dict[str, str]]:
    """Per-source ratios: a group's ratio split among its members in proportion to available tokens
    (equally when none has any). Returns the ratios and source -> group."""
    ratios: dict[str, float] = {}
    member_of: dict[str, str] = {}
    for key, ratio in mixture.items():
        members = groups.get(key)
        if members is None:
            ratios[key] = ratio
            continue
        total = sum(available[m] for m in members)
        for m in members:
            ratios[m] = ratio * (available[m] / total if total > 0 else 1 / len(members))
            member_of[m] = key
    return {s: r for s, r in ratios.items()}, member_of


def _allocate_positive(
    ratios: dict[str, float], capacity: dict[str, float], total: float
) -> dict[str, float]:
    """`allocate` for ratios that may be zero (an empty group member gets nothing)."""
    live = {s: r for s, r in ratios.items() if r > 0}
    targets = allocate(live, capacity, total) if live else {}
    return {s: targets.get(s, 0.0) for s in ratios}


@dataclass(frozen=True, eq=False)  # equality: as the JSON mapping (JsonResult)
class BlendResult(JsonResult):
    """What a blend took: the fields of its `manifest.json`."""

    stage: str
    seed: str
    target_tokens: int
    taken_tokens: int
    docs: int
    token_estimate: str
    ratios: dict
    groups: dict
    shortfall: dict
    sources: list
    licenses: list


def blend(
    inputs: dict[str, tuple[Path, float]],
    ratios: dict[str, float],
    target_tokens: int,
    out_dir: str | Path,
    seed: int | str = 0,
    groups: dict[str, tuple[str, ...]] | None = None,
    epoch_caps: dict[str, float] | None = None,
    on_shortfall: str = "record",
    stage: str = "",
    token_estimate: str = "chars / chars_per_token of the source's language (recipe)",
) -> BlendResult:
    """Select documents from `inputs` (source -> (deduped path, chars per token)) to reach
    `target_tokens` split by `ratios` (keys: sources, or groups named in `groups`); write
    `data.parquet` and `manifest.json` into `out_dir`.

    `epoch_caps` (source -> max passes, default 1) allows upsampling: a source may then give up to
    cap x its tokens, its documents repeated in whole seeded passes plus a partial one. The same seed
    gives the same selection; stages pass their own seed so each draws its own sample."""
    groups = groups or {}
    epoch_caps = epoch_caps or {}
    sources = [m for k in ratios for m in groups.get(k, (k,))]
    estimates: dict[str, list[float]] = {}
    chars: dict[str, list[int]] = {}
    for source in sources:
        path, chars_per_token = inputs[source]
        lengths = [len(d["text"]) for d in iter_docs(path, columns=["text"])]
        chars[source] = lengths
        estimates[source] = [n / chars_per_token for n in lengths]
    available = {s: sum(e) for s, e in estimates.items()}
    per_source, member_of = expand_groups(ratios, groups, available)
    caps = {s: float(epoch_caps.get(s, 1.0)) for s in sources}
    capacity = {s: available[s] * caps[s] for s in sources}
    targets = _allocate_positive(per_source, capacity, target_tokens)
    shortfall = max(0.0, target_tokens - sum(capacity.values()))
    if shortfall > 0 and on_shortfall == "error":
        raise BlendShortfall(
            f"stage '{stage}': the sources hold {sum(capacity.values()):,.0f} tokens within their epoch caps "
            f"({', '.join(f'{s} {capacity[s]:,.0f}' for s in sources)}), the target is {target_tokens:,}; "
            "lower target_tokens, add data, or set upsample/max_epochs"
        )
    shares = {
        s: SourceShare(
            s,
            per_source[s],
            targets[s],
            available[s],
            len(estimates[s]),
            group=member_of.get(s),
            epoch_cap=caps[s],
            capacity_tokens=capacity[s],
            chars_per_token=inputs[s][1],
        )
        for s in sources
    }
    licenses: dict[str, dict[str, float]] = {}
    with atomic_dir(out_dir) as tmp, DocWriter(tmp / BLEND_FILE) as out:
        for source in sources:
            est = estimates[source]
            acc = shares[source]
            uses = _select(est, acc, caps[source], f"{seed}:{source}")
            for i, doc in enumerate(iter_docs(inputs[source][0])):
                n = uses.get(i, 0)
                for _ in range(n):
                    out.write(doc)
                if n:
                    lic = licenses.setdefault(doc["license"], {"docs": 0, "tokens": 0.0})
                    lic["docs"] += n
                    lic["tokens"] += est[i] * n
                    acc.taken_chars += chars[source][i] * n
                    acc.repeated_docs += n - 1
        total = sum(s.taken_tokens for s in shares.values()) or 1.0
        for s in shares.values():
            s.share = s.taken_tokens / total
            s.epochs = s.taken_tokens / s.available_tokens if s.available_tokens else 0.0
            s.exhausted = s.target_tokens >= s.capacity_tokens - 1e-9 and s.ratio > 0
        taken = sum(s.taken_tokens for s in shares.values())
        manifest = {
            "stage": stage,
            "seed": str(seed),
            "target_tokens": target_tokens,
            "taken_tokens": round(taken),
            "docs": out.count,
            "token_estimate": token_estimate,
            "ratios": dict(ratios),
            "groups": {g: list(m) for g, m in groups.items()},
            "shortfall": {
                "tokens": round(shortfall),
                "fraction": shortfall / target_tokens if target_tokens else 0.0,
                "met": shortfall == 0,
                "note": "the sources cannot meet the target within their epoch caps" if shortfall else "",
            },
            "sources": [_rounded(asdict(s)) for s in shares.values()],
            "licenses": [
                {"license": k, "docs": v["docs"], "tokens": round(v["tokens"]), "share": v["tokens"] / total}
                for k, v in sorted(licenses.items())
            ],
        }
        write_json(tmp / MANIFEST_FILE, manifest)
    return BlendResult(**manifest)


def measured_chars_per_token(manifest_path: str | Path, index_path: str | Path) -> dict[str, float]:
    """Chars per token per source measured by an earlier run: the characters a blend took (its
    manifest) over the exact tokens the packed dataset holds for them (its index, without BOS/EOS).
    Empty when either file is missing or predates these fields."""
    manifest_path, index_path = Path(manifest_path), Path(index_path)
    if not (manifest_path.exists() and index_path.exists()):
        return {}
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    index = json.loads(index_path.read_text(encoding="utf-8"))
    out: dict[str, float] = {}
    for row in manifest.get("sources", []):
        counts = index.get("sources", {}).get(row["source"])
        if not counts or not row.get("taken_chars") or counts.get("docs") != row.get("taken_docs"):
            continue  # the dataset was packed from another blend: do not trust the pairing
        tokens = counts["tokens"] - 2 * counts["docs"]
        if tokens > 0:
            out[row["source"]] = row["taken_chars"] / tokens
    return out


def _select(est: list[float], acc: SourceShare, cap: float, seed: str) -> dict[int, int]:
    """Document index -> times used: seeded passes over the source until its target is met; a
    document is taken when it does not overshoot the target by more than half its size."""
    uses: dict[int, int] = {}
    passes = max(1, math.ceil(cap))
    for p in range(passes):
        if acc.taken_tokens >= acc.target_tokens:
            break
        order = list(range(len(est)))
        random.Random(seed if p == 0 else f"{seed}:pass{p}").shuffle(order)
        before = acc.taken_tokens
        for i in order:
            if acc.taken_tokens + est[i] / 2 > acc.target_tokens:
                continue
            uses[i] = uses.get(i, 0) + 1
            acc.taken_tokens += est[i]
            acc.taken_docs += 1
        if acc.taken_tokens == before:
            break
    return uses


def _rounded(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
