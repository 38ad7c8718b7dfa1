"""The leaderboard: every scored model version against every benchmark, from the stored results, and a
plot of each benchmark's score against the tokens a version has seen, both written under `eval/`
(`Layout.leaderboard`, `Layout.leaderboard_plot`) by `write_leaderboard`."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from lm_platform.atomic import atomic_path, read_json, write_json
from lm_platform.evaluation.versions import chain_order, current_results
from lm_platform.paths import Layout


def cumulative_tokens_seen(model_dir: str | Path) -> int | None:
    """Training tokens a model version has seen along its whole stage chain (the trainer's
    `tokens_seen_total` in a stage export's metrics.json; `tokens_before + tokens_seen` in a step
    checkpoint's trainer_state.json), None when the directory records neither."""
    d = Path(model_dir)
    if (d / "metrics.json").is_file():
        m = read_json(d / "metrics.json")
        if m.get("tokens_seen_total") is not None:
            return int(m["tokens_seen_total"])
    if (d / "trainer_state.json").is_file():
        s = read_json(d / "trainer_state.json")
        if s.get("tokens_seen") is not None:
            return int(s.get("tokens_before", 0)) + int(s["tokens_seen"])
    return None


def leaderboard_rows(benchmarks: list[str], stages: list[str], layout: Layout) -> list[dict]:
    """One row per scored version (stage-chain order): version, tokens_seen (cumulative along the
    version's stage chain, so a later stage plots to the right of the one it started from) and each
    benchmark's score. Only scores of the weights each version names now (`versions.current_results`): a
    score of weights a retrained stage replaced is not on the board."""
    rows: dict[str, dict] = {}
    for name in benchmarks:
        for version, res in current_results(layout, name).items():
            seen = cumulative_tokens_seen(res["model"]) if res.get("model") else None
            seen = seen if seen is not None else res.get("tokens_seen")
            row = rows.setdefault(version, {"version": version, "tokens_seen": seen})
            row[name] = res["score"]
    return [rows[v] for v in chain_order(list(rows), stages)]


def leaderboard_plot(benchmarks: list[str], rows: list[dict]) -> bytes | None:
    """PNG with one panel per benchmark: score against tokens seen, points labelled by version; None
    without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = max(1, len(benchmarks))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    for ax, name in zip(axes[0], benchmarks, strict=False):
        pts = sorted(
            (r["tokens_seen"], r[name], r["version"])
            for r in rows
            if name in r and r["tokens_seen"] is not None
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
            for x, y, label in pts:
                ax.annotate(label, (x, y), fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("tokens seen", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


@dataclass(frozen=True)
class Leaderboard:
    """What `write_leaderboard` wrote: the rows (also `eval/leaderboard.json`) and the plot, if any
    (`eval/leaderboard.png`)."""

    rows: list[dict]
    path: Path
    plot: bytes | None
    plot_file: Path | None


def write_leaderboard(layout: Layout, benchmarks: list[str], stages: list[str]) -> Leaderboard:
    """The leaderboard's rows and plot, each written atomically; a plot left by an earlier run is removed
    when none can be drawn now (no matplotlib), so the files never disagree."""
    rows = leaderboard_rows(benchmarks, stages, layout)
    write_json(layout.leaderboard(), rows)
    png = leaderboard_plot(benchmarks, rows)
    plot_file = layout.leaderboard_plot()
    if png:
        with atomic_path(plot_file) as tmp:
            tmp.write_bytes(png)
    else:
        plot_file.unlink(missing_ok=True)
    return Leaderboard(rows, layout.leaderboard(), png, plot_file if png else None)
