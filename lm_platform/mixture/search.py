"""The numbers of a mixture search (RegMix-style): candidate mixtures, the predictor fitted from mixture
weights to the proxies' scores, its leave-one-out rank correlation, and the predicted best mixture.

Plain NumPy; the runs that produce the scores are `lm_platform.mixture.proxy`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np

from lm_platform.results import JsonResult

# Rejection sampling gives up after this many Dirichlet draws per wanted candidate.
DRAWS_PER_CANDIDATE = 2000


def effective_bounds(
    bounds: dict[str, tuple[float, float]], available: dict[str, float], proxy_tokens: int, epoch_caps=None
) -> dict[str, tuple[float, float]]:
    """The bounds with each source's maximum lowered to what it holds (`available` packed tokens x its
    epoch cap) over the proxy's token budget, so no candidate asks a source for more than it has.
    Raises when the sources cannot fill the budget within their bounds."""
    caps = epoch_caps or {}
    out = {}
    for s, (lo, hi) in bounds.items():
        room = available.get(s, 0.0) * float(caps.get(s, 1.0)) / proxy_tokens
        hi = min(hi, room)
        if hi < lo:
            raise ValueError(
                f"mixture_search: source '{s}' holds {available.get(s, 0):,.0f} tokens, "
                f"{room:.1%} of proxy.tokens {proxy_tokens:,}, below its minimum share {lo:.0%}; "
                "lower proxy.tokens or the minimum"
            )
        out[s] = (lo, hi)
    if sum(hi for _, hi in out.values()) < 1 - 1e-9:
        raise ValueError(
            "mixture_search: the sources cannot fill proxy.tokens "
            f"({proxy_tokens:,}) within their bounds and available tokens ("
            + ", ".join(f"{s} <= {hi:.1%}" for s, (_, hi) in out.items())
            + "); lower proxy.tokens"
        )
    return out


def sample_candidates(
    centre: dict[str, float],
    bounds: dict[str, tuple[float, float]],
    n: int,
    seed: int,
    concentration: float = 1.0,
) -> list[dict[str, float]]:
    """`n` mixtures drawn from a seeded Dirichlet around `centre` (alpha = concentration x sources x
    share), each within `bounds` (rejection sampling). The same arguments give the same candidates."""
    names = list(bounds)
    k = len(names)
    share = np.array([max(float(centre.get(s, 0.0)), 1e-3) for s in names])
    alpha = concentration * k * share / share.sum()
    lo = np.array([bounds[s][0] for s in names])
    hi = np.array([bounds[s][1] for s in names])
    rng = np.random.default_rng(seed)
    found: list[np.ndarray] = []
    draws = 0
    while len(found) < n and draws < DRAWS_PER_CANDIDATE * n:
        batch = rng.dirichlet(alpha, size=256)
        draws += len(batch)
        ok = batch[np.all((batch >= lo - 1e-12) & (batch <= hi + 1e-12), axis=1)]
        found += list(ok[: n - len(found)])
    if len(found) < n:
        raise ValueError(
            f"mixture_search: only {len(found)} of {n} candidates fell within the bounds in {draws:,} draws "
            "(the bounds are narrow for the Dirichlet around the stage's mixture); widen the bounds or "
            "raise concentration"
        )
    return [{s: float(w) for s, w in zip(names, row, strict=True)} for row in found]


@dataclass(frozen=True)
class Predictor:
    """Ridge regression of the target (or, log_linear, of its logarithm) on the mixture weights."""

    kind: str
    sources: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float

    def linear(self, weights: np.ndarray) -> np.ndarray:
        return np.asarray(weights, dtype=np.float64) @ np.asarray(self.coef) + self.intercept

    def predict(self, weights: np.ndarray) -> np.ndarray:
        z = self.linear(weights)
        return np.exp(z) if self.kind == "log_linear" else z

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "coef": dict(zip(self.sources, self.coef, strict=True)),
            "intercept": self.intercept,
        }


def fit(
    sources: list[str], weights: np.ndarray, scores: np.ndarray, kind: str = "log_linear", ridge: float = 1e-3
) -> Predictor:
    """Fit the predictor: centred ridge regression (weights sum to one, so the intercept absorbs one
    direction; the penalty keeps the solution unique)."""
    x = np.asarray(weights, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if kind == "log_linear":
        if np.any(y <= 0):
            raise ValueError("mixture_search: log_linear needs positive scores (bits per byte are)")
        y = np.log(y)
    xm, ym = x.mean(axis=0), y.mean()
    xc = x - xm
    beta = np.linalg.solve(
        xc.T @ xc + ridge * np.eye(x.shape[1]) + 1e-12 * np.eye(x.shape[1]), xc.T @ (y - ym)
    )
    return Predictor(kind, tuple(sources), tuple(float(b) for b in beta), float(ym - xm @ beta))


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    out = np.empty(len(v))
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's on the ranks); nan when either side is constant."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den else float("nan")


def loo_predictions(sources, weights, scores, kind: str, ridge: float) -> np.ndarray:
    """Each candidate's score predicted by the predictor fitted on all the others."""
    x, y = np.asarray(weights), np.asarray(scores)
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = fit(sources, x[keep], y[keep], kind, ridge).predict(x[i : i + 1])[0]
    return out


def best_mixture(predictor: Predictor, bounds: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The mixture within `bounds` (shares summing to one) that the predictor scores lowest. Both
    predictors are monotone in a linear function of the weights, so the optimum is exact: every source at
    its minimum, then what is left to the sources with the smallest coefficients, each up to its maximum."""
    coef = dict(zip(predictor.sources, predictor.coef, strict=True))
    w = {s: lo for s, (lo, _) in bounds.items()}
    left = 1.0 - sum(w.values())
    for s in sorted(bounds, key=lambda s: (coef[s], list(bounds).index(s))):
        add = min(bounds[s][1] - w[s], left)
        w[s] += add
        left -= add
    return {s: round(v, 6) for s, v in w.items()}


@dataclass(frozen=True, eq=False)
class Recommendation(JsonResult):
    """The fitted predictor, its leave-one-out rank correlation, and the predicted best mixture."""

    sources: list
    candidates: list  # {"name", "weights", "score", "loo_predicted"} per candidate
    predictor: dict
    loo_spearman: float
    mixture: dict
    predicted_score: float
    best_candidate: dict
    bounds: dict = field(default_factory=dict)


def recommend(
    candidates: list[dict],
    bounds: dict[str, tuple[float, float]],
    kind: str = "log_linear",
    ridge: float = 1e-3,
) -> Recommendation:
    """Fit on the candidates (`{"name", "weights", "score"}` each; lower scores are better), report the
    leave-one-out Spearman of predicted against measured, and the predicted best mixture within
    `bounds`."""
    if len(candidates) < 3:
        raise ValueError(f"mixture_search: {len(candidates)} scored candidates; a fit needs at least 3")
    sources = list(bounds)
    x = np.array([[c["weights"][s] for s in sources] for c in candidates])
    y = np.array([float(c["score"]) for c in candidates])
    predictor = fit(sources, x, y, kind, ridge)
    loo = loo_predictions(sources, x, y, kind, ridge)
    mixture = best_mixture(predictor, bounds)
    best = min(candidates, key=lambda c: c["score"])
    return Recommendation(
        sources=sources,
        candidates=[{**c, "loo_predicted": float(p)} for c, p in zip(candidates, loo, strict=True)],
        predictor=predictor.to_json(),
        loo_spearman=spearman(loo, y),
        mixture=mixture,
        predicted_score=float(predictor.predict(np.array([[mixture[s] for s in sources]]))[0]),
        best_candidate={"name": best["name"], "weights": best["weights"], "score": best["score"]},
        bounds={s: list(b) for s, b in bounds.items()},
    )


def plot_png(rec: dict, verification: dict | None = None) -> bytes | None:
    """Predicted (leave-one-out) against measured score of each candidate, and the verification proxy's
    predicted against measured, as PNG bytes; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    measured = [c["score"] for c in rec["candidates"]]
    predicted = [c["loo_predicted"] for c in rec["candidates"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.scatter(measured, predicted, label="candidates (leave-one-out)", color="tab:blue")
    points = measured + predicted
    if verification is not None:
        ax.scatter(
            [verification["score"]],
            [rec["predicted_score"]],
            marker="*",
            s=160,
            color="tab:red",
            label="recommended (verified)",
        )
        points += [verification["score"], rec["predicted_score"]]
    lo, hi = min(points), max(points)
    pad = (hi - lo) * 0.05 or 0.01
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", linewidth=0.8)
    ax.set_xlabel("measured target (bits per byte)")
    ax.set_ylabel("predicted target")
    ax.set_title(f"leave-one-out Spearman {rec['loo_spearman']:.2f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
