"""The quality model's part of `benchmarks.filter_quality`: a model per language trained on held-apart
documents only, its held-out AUC (report-only), the score distributions of the clean dev sets and of each
noise kind, the quality filter on the web-like sets, and what scoring costs next to the chain.

Training data: the dev sample holds no low-quality real web text, so a language's negatives are the noise
generator's documents (every kind, seed 1, made from held-apart text; the measured noise uses seed 0) and
its positives the held-apart clean documents of every set of the language, cut into pieces of the model's
`max_chars` (the features read no further). Neither side goes through the chain first (the platform
trains on what the filters keep; here almost no noise would be left). The filter on web-like sets is
`min_score` (the per-document rule: the benchmark judges documents one at a time), at the score that
keeps 99 % of the model's held-out clean pieces; `keep_top_share` keeps exactly its share of any file by
construction, clean or not, so it has nothing to measure here.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

# Sets whose sources a recipe would filter by quality (web crawls); the others are high-quality sources.
WEB_LIKE = {"en_web"}


class QualityBench:
    def __init__(self, apart: dict[str, list], langs: list[str], n_noise: int, quick: bool):
        from lm_platform.data.curation.noise import NOISE_TYPES, make_noise
        from lm_platform.data.curation.quality_model import QualityScorer, train_quality_model
        from lm_platform.data.curation.reference_lm import in_hash_share
        from lm_platform.recipe.quality import QualityModelConfig

        self.cfg = QualityModelConfig(positives=("clean",), negatives=("noise",))
        self.scorers: dict[str, QualityScorer] = {}
        self.auc: dict[str, float] = {}
        self.clean: dict[str, list[float]] = {}
        self.noise: dict[tuple[str, str], list[float]] = {}
        self.web_kept: dict[str, tuple[int, int]] = {}
        self.seconds = 0.0
        self._tmp = tempfile.TemporaryDirectory()
        step = self.cfg.max_chars
        self.min_score: dict[str, float] = {}
        for lang in langs:
            # Every held-apart document's start, then further pieces of long documents (books, literature)
            # while their set has fewer pieces than the language's set with the most documents: each
            # genre weighs about the same.
            sets: dict[str, list] = {}
            for d in apart[lang]:
                sets.setdefault(d.id.split("-")[0], []).append(d)  # the collection: gutenberg, ewt, ...
            most = max(len(docs) for docs in sets.values())
            pos = []
            for docs in sets.values():
                pieces = [(f"{d.id}#0", d.text[:step]) for d in docs]
                k = 1
                while len(pieces) < most and any(len(d.text) > k * step for d in docs):
                    pieces += [
                        (f"{d.id}#{k}", d.text[k * step : (k + 1) * step])
                        for d in docs
                        if len(d.text) > k * step
                    ]
                    k += 1
                pos += pieces[:most]
            others = [d.text for other, docs in apart.items() if other != lang for d in docs]
            material = [d.text for d in apart[lang]]
            per_kind = max(n_noise, len(pos) // len(NOISE_TYPES))
            neg = [
                (f"{kind}#{j}", t)
                for kind in NOISE_TYPES
                for j, t in enumerate(make_noise(kind, lang, material, per_kind, 1, others))
            ]
            out = Path(self._tmp.name) / lang
            res = train_quality_model(pos, neg, out, lang, self.cfg, (["held-apart clean"], ["noise seed 1"]))
            self.scorers[lang] = QualityScorer(out)
            self.auc[lang] = res.auc
            # The filter's threshold: what keeps 99 % of the model's held-out clean pieces.
            held = [
                t for i, t in pos if in_hash_share(f"{self.cfg.seed}:heldout:{i}", self.cfg.heldout_fraction)
            ]
            self.min_score[lang] = float(np.quantile(self.scorers[lang].score(held), 0.01))
            print(
                f"quality model {lang}: {res.train_pos} clean pieces / {res.train_neg} noise documents, held-out "
                f"{res.heldout_pos}/{res.heldout_neg}: AUC {res.auc}, precision {res.precision}, recall "
                f"{res.recall}; filter threshold {self.min_score[lang]:.3f}"
            )

    def judge(self, name: str, lang: str, text: str, kept: bool) -> str | None:
        """Score a measured document (timed, CPU); 'quality' when a web-like set's filter drops it."""
        t0 = time.process_time()
        score = self.scorers[lang].score_one(text)
        self.seconds += time.process_time() - t0
        self.clean.setdefault(name, []).append(score)
        if name in WEB_LIKE and kept:
            n, dropped = self.web_kept.get(name, (0, 0))
            low = score < self.min_score[lang]
            self.web_kept[name] = (n + 1, dropped + low)
            return "quality" if low else None
        return None

    def score_noise(self, kind: str, lang: str, texts: list[str]) -> None:
        self.noise[(kind, lang)] = [self.scorers[lang].score_one(t) for t in texts]

    def report(self, chain_seconds: float, sets: dict[str, tuple[str, str]]) -> str:
        """Print the distributions and the cost; return the RESULT line's extra fields."""

        def row(label: str, scores: list[float], cut: float) -> str:
            a = np.asarray(scores)
            q = np.quantile(a, [0.1, 0.5, 0.9]) if a.size else [float("nan")] * 3
            below = (a < cut).mean() if a.size else float("nan")
            return f"{label:<32} {a.size:>5} {q[0]:>6.3f} {q[1]:>6.3f} {q[2]:>6.3f} {below:>9.3f}"

        print(
            f"\nquality scores (the clean class's probability; the filter, on {sorted(WEB_LIKE)} only, keeps >= t)"
        )
        print(f"{'set / noise kind':<32} {'docs':>5} {'p10':>6} {'p50':>6} {'p90':>6} {'share < t':>9}")
        for lang in sorted(self.scorers):
            cut = self.min_score[lang]
            print(f"-- {lang} (model held-out AUC {self.auc[lang]}, t = {cut:.3f})")
            for name, (_r, set_lang) in sets.items():
                if set_lang == lang and name in self.clean:
                    print(row(f"clean {name}", self.clean[name], cut))
            for (kind, noise_lang), scores in self.noise.items():
                if noise_lang == lang:
                    print(row(f"noise {kind}", scores, cut))
        share = self.seconds / chain_seconds if chain_seconds else float("nan")
        print(
            f"scoring every measured document: {self.seconds:.2f} CPU s, {share:.1%} of the chain's "
            f"{chain_seconds:.2f} CPU s over the same documents"
        )
        dropped = {k: v[1] / v[0] for k, v in self.web_kept.items() if v[0]}
        print(f"quality filter on web-like sets: share of chain-kept documents it drops {dropped}")
        return f"quality_cost_share={share:.3f} quality_min_auc={min(self.auc.values()):.3f}"
