"""The text blend the platform used before blends counted exact tokens: the peer of `benchmarks.blend`.

Documents are selected from deduplicated Parquet files by token estimates (characters / chars per token
given per source), with the same ratios, groups, epoch caps and overflow rule as `data.blending.blend`, and
written out as text (`data.parquet`) for `benchmarks._text_pack.pack_text` to tokenize again. Only the benchmark
uses it; the platform runs `data.blending.blend.blend_tokens`.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.data.blending.blend import (
    MANIFEST_FILE,
    BlendShortfall,
    _allocate_positive,
    _rounded,
    expand_groups,
)
from lm_platform.data.corpus.documents import DocWriter, iter_docs
from lm_platform.results import JsonResult

BLEND_FILE = "data.parquet"


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
