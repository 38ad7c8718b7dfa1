"""What the evaluation assets report, computed from the stored scores and models (no Dagster): the
registered versions with their weights, the generation samples of every scored version side by side, and
a score's regression verdict. The leaderboard is `evaluation/leaderboard.py`."""

from __future__ import annotations

from dataclasses import dataclass

from lm_platform.evaluation.generation import side_by_side
from lm_platform.evaluation.stats import regression
from lm_platform.evaluation.versions import chain_order, current_results, model_dir, tokens_seen, weights_hash
from lm_platform.paths import Layout

VERSION_COLUMNS = ["version", "tokens_seen", "weights", "path"]


def version_rows(layout: Layout, versions: list[str], stage_order: list[str]) -> list[dict]:
    """One row per registered version in stage-chain order: tokens seen, weights hash, model directory."""
    rows = []
    for key in chain_order(versions, stage_order):
        path = model_dir(layout, key)
        rows.append(
            {
                "version": key,
                "tokens_seen": tokens_seen(path),
                "weights": weights_hash(path),
                "path": str(path),
            }
        )
    return rows


def samples_side_by_side(
    layout: Layout, benchmark: str, stage_order: list[str], result: dict
) -> tuple[list[dict], list[str]]:
    """A generation benchmark's rows (one per prompt: each scored version's greedy output, `result`'s
    version with its new samples) and their columns."""
    current = current_results(layout, benchmark)
    order = chain_order(sorted(set(current) | {result["version"]}), stage_order)
    by_version = {v: current.get(v, {}).get("samples", []) for v in order}
    by_version[result["version"]] = result["samples"]
    return side_by_side(by_version), ["prompt", *order]


@dataclass(frozen=True)
class Regression:
    """A score against the previous version's: how far it is worse beyond the tolerance (0: passed)."""

    previous_version: str | None
    previous_score: float | None
    score: float
    tolerance: float
    beyond_tolerance: float

    @property
    def passed(self) -> bool:
        return self.beyond_tolerance == 0.0


def regression_verdict(result: dict, tolerance: float) -> Regression:
    prev = result["previous_score"]
    worse = 0.0 if prev is None else regression(result["score"], prev, tolerance, result["higher_is_better"])
    return Regression(result["previous_version"], prev, result["score"], tolerance, worse)
