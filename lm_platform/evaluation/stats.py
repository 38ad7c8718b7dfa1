"""Means and standard errors of per-item scores, overall and per group, and the change from a previous
version."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); NaN stderr for n < 2."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mu = sum(values) / n
    if n < 2:
        return mu, float("nan")
    var = sum((v - mu) ** 2 for v in values) / (n - 1)
    return mu, math.sqrt(var / n)


def summary(values: Sequence[float]) -> dict:
    mu, se = mean_stderr(values)
    return {"score": mu, "n": len(values), "stderr": se}


def grouped(pairs: Iterable[tuple[str, float]]) -> dict[str, dict]:
    """{group: {score, n, stderr}} from (group, value) pairs, groups sorted by name."""
    by: dict[str, list[float]] = {}
    for group, value in pairs:
        by.setdefault(group, []).append(value)
    return {g: summary(v) for g, v in sorted(by.items())}


def with_previous(result: dict, previous_score: float | None, previous_version: str | None = None) -> dict:
    """The result with `previous_score`, `previous_version` and `delta` (score - previous) set."""
    result = dict(result)
    result["previous_score"] = previous_score
    result["previous_version"] = previous_version
    result["delta"] = None if previous_score is None else result["score"] - previous_score
    return result


def regression(score: float, previous: float, tolerance: float, higher_is_better: bool) -> float:
    """How far `score` is worse than `previous` beyond `tolerance` (0 when within it)."""
    worse = previous - score if higher_is_better else score - previous
    return max(0.0, worse - tolerance)
