"""The quality model: a linear classifier over hashed word and character n-grams (DCLM-style), trained per
language on high-quality sources (positives) against a seeded sample of web sources (negatives).

Features (`Featurizer`): the first `max_chars` characters, lower-cased, digits folded to 0; word n-grams
(words are runs of letters and digits; for Japanese, Chinese and Thai, runs of one script) and character
n-grams, each kind hashed (no vocabulary) into 2**hash_bits columns of l2-normalised counts. Classifier: L2 logistic regression (liblinear), classes balanced.
The model on disk is the weight vector (`weights.npy`) and a JSON file of the feature settings,
intercept, metrics and top features; never a pickle. A document's score is the model's probability of
the high-quality class.

Filtering (`QualityStep`): `keep_top_share` keeps exactly round(share x n) of the n documents reaching
the step, best first, ties broken by a seeded hash of the id (so a rerun keeps the same documents);
`min_score` decides per document. Blend weighting (`quality_buckets`) ranks a source's documents the
same way and cuts the ranking at the configured top shares.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lm_platform.atomic import atomic_dir, atomic_path
from lm_platform.data.corpus.documents import iter_docs
from lm_platform.data.curation.reference_lm import in_hash_share
from lm_platform.recipe.quality import QualityModelConfig, SourceQuality
from lm_platform.results import JsonResult
from lm_platform.storage import cache as store_cache

MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.npy"
CHAR_LANGUAGES = ("ja", "zh", "th")
_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
# A run of one script (kanji, hiragana, katakana, Thai, Latin letters, digits).
_SCRIPT_RUN = re.compile(
    r"[\u4e00-\u9fff\u3400-\u4dbf々〆]+|[\u3040-\u309f]+|[\u30a0-\u30ffー]+|[\u0e00-\u0e7f]+|[^\W\d_]+|\d+"
)
# 64-bit constants of the character n-gram hash (a polynomial rolling hash, then a SplitMix64 finaliser).
_PRIME = np.uint64(0x100000001B3)
_GOLDEN = 0x9E3779B97F4A7C15  # salt per n-gram length: n x this, mod 2**64
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def prepare(text: str, max_chars: int) -> str:
    """What the features see: the start of the document, lower-cased, digits folded to 0, each run of
    white space one space."""
    return _SPACES.sub(" ", _DIGITS.sub("0", text[:max_chars].lower())).strip()


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * _MIX1
    h = h ^ (h >> np.uint64(27))
    h = h * _MIX2
    return h ^ (h >> np.uint64(31))


class Featurizer:
    """Hashed word n-grams and character n-grams of a language's documents (stateless: settings only).

    Words are runs of letters and digits (for Japanese, Chinese and Thai: runs of one script), hashed with
    CRC-32 and a 64-bit mixer; character n-grams run over the prepared text, hashed all at once with
    NumPy (a rolling polynomial hash per length, then a 64-bit mixer), so that scoring one document stays a
    small share of curation's time. Each kind's counts are l2-normalised; kind k's columns start at k x n.
    """

    def __init__(
        self, lang: str, word_ngrams: int, char_ngrams: Sequence[int], hash_bits: int, max_chars: int
    ):
        self.lang, self.max_chars = lang, max_chars
        self.n = 2**hash_bits
        self.word_ngrams = word_ngrams
        self.char_range = (max(1, char_ngrams[0]), char_ngrams[1]) if char_ngrams[1] else None
        self.word_re = _SCRIPT_RUN if lang in CHAR_LANGUAGES else _WORD
        self.kinds = (["word"] if word_ngrams else []) + (["char"] if self.char_range else [])

    @classmethod
    def from_config(cls, lang: str, cfg: QualityModelConfig) -> Featurizer:
        return cls(lang, cfg.word_ngrams, cfg.char_ngrams, cfg.hash_bits, cfg.max_chars)

    @property
    def width(self) -> int:
        return self.n * len(self.kinds)

    def word_grams(self, prepared: str) -> list[str]:
        words = self.word_re.findall(prepared)
        grams = list(words)
        for k in range(2, self.word_ngrams + 1):
            grams += [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]
        return grams

    def _word_columns(self, grams: list[str]) -> np.ndarray:
        crc = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams))
        return (_mix(crc) % np.uint64(self.n)).astype(np.int64)

    def _char_hashes(self, prepared: str) -> list[np.ndarray]:
        """Per n-gram length, the hash of every character n-gram of the text (position i: text[i:i+n])."""
        assert self.char_range is not None
        lo, hi = self.char_range
        codes = np.frombuffer(prepared.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        out, h = [], codes + np.uint64(1)
        for n in range(1, hi + 1):
            if n > 1:
                h = h[:-1] * _PRIME + codes[n - 1 :] + np.uint64(1)
            if n >= lo and len(h):
                out.append(_mix(h + np.uint64((_GOLDEN * n) % 2**64)))
        return out

    def _columns(self, prepared: str) -> list[np.ndarray]:
        """Per kind, the column of each of the document's n-grams (with repeats)."""
        cols = []
        for kind in self.kinds:
            if kind == "word":
                cols.append(self._word_columns(self.word_grams(prepared)))
            else:
                hashes = self._char_hashes(prepared)
                cols.append(
                    (np.concatenate(hashes) % np.uint64(self.n)).astype(np.int64)
                    if hashes
                    else np.zeros(0, np.int64)
                )
        return cols

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(columns, values) of one document: l2-normalised counts per kind."""
        cols, vals = [], []
        for k, idx in enumerate(self._columns(prepare(text, self.max_chars))):
            if not len(idx):
                continue
            c, counts = np.unique(idx, return_counts=True)
            counts = counts.astype(np.float64)
            cols.append(c + k * self.n)
            vals.append(counts / np.sqrt(counts @ counts))
        if not cols:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(cols), np.concatenate(vals)

    def transform(self, texts: Sequence[str]):
        """A CSR matrix of the documents' features (one row each)."""
        import scipy.sparse as sp

        indptr, indices, data = [0], [], []
        for text in texts:
            c, v = self.features(text)
            indices.append(c)
            data.append(v)
            indptr.append(indptr[-1] + len(c))
        return sp.csr_matrix(
            (
                np.concatenate(data) if data else np.zeros(0),
                np.concatenate(indices) if indices else np.zeros(0, np.int64),
                indptr,
            ),
            shape=(len(texts), self.width),
        )

    def margin(self, text: str, weights: np.ndarray) -> float:
        """`transform([text]) @ weights` for one document, without building a matrix."""
        c, v = self.features(text)
        return float(weights[c] @ v)

    def names_of(self, columns: Iterable[int], texts: Iterable[str]) -> dict[int, str]:
        """The most frequent n-gram of `texts` hashed to each of `columns` (hashing keeps no vocabulary)."""
        wanted = np.array(sorted(set(columns)), dtype=np.int64)
        counts: dict[int, dict[str, int]] = {}
        for text in texts:
            prepared = prepare(text, self.max_chars)
            seen: set[tuple[int, str]] = set()
            for k, kind in enumerate(self.kinds):
                if kind == "word":
                    grams = self.word_grams(prepared)
                    idx = self._word_columns(grams)
                    labels = [f"word:{g}" for g in grams]
                    hits = np.flatnonzero(np.isin(idx + k * self.n, wanted))
                    seen |= {(int(idx[i]) + k * self.n, labels[i]) for i in hits}
                else:
                    lo, _hi = self.char_range
                    for j, h in enumerate(self._char_hashes(prepared)):
                        n = lo + j
                        idx = (h % np.uint64(self.n)).astype(np.int64) + k * self.n
                        seen |= {
                            (int(idx[i]), f"char:{prepared[i : i + n]}")
                            for i in np.flatnonzero(np.isin(idx, wanted))
                        }
            for col, label in seen:
                per = counts.setdefault(col, {})
                per[label] = per.get(label, 0) + 1
        return {c: max(v, key=v.get) for c, v in counts.items() if v}


@dataclass(frozen=True, eq=False)  # equality: as the JSON mapping (JsonResult)
class QualityModelResult(JsonResult):
    """What training wrote: the fields of `model.json` shown as asset metadata."""

    lang: str
    positives: list
    negatives: list
    train_pos: int
    train_neg: int
    heldout_pos: int
    heldout_neg: int
    precision: float
    recall: float
    auc: float
    heldout_scores: dict
    top_features: list
    seconds: float


def _sample(docs: Iterable[tuple[str, str]], cap: int, seed: int, salt: str) -> list[tuple[str, str]]:
    """The `cap` documents with the smallest seeded hash of their id (bounded memory: a heap)."""
    heap: list[tuple[int, str, str]] = []
    for doc_id, text in docs:
        h = -int.from_bytes(
            hashlib.blake2b(f"{seed}:{salt}:{doc_id}".encode(), digest_size=8).digest(), "big"
        )
        item = (h, doc_id, text)
        if len(heap) < cap:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
    return [(doc_id, text) for _h, doc_id, text in sorted(heap, reverse=True)]


def train_quality_model(
    positives: Iterable[tuple[str, str]],
    negatives: Iterable[tuple[str, str]],
    out_dir: str | Path,
    lang: str,
    cfg: QualityModelConfig,
    sources: tuple[Sequence[str], Sequence[str]] = ((), ()),
    log: Callable[[str], None] | None = None,
) -> QualityModelResult:
    """Train the model on (id, text) pairs of each class (ids unique across sources), measure it on the
    held-out share, write `weights.npy` and `model.json` into `out_dir` atomically."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    start = time.perf_counter()
    cap = cfg.max_docs_per_class
    pos = _sample(((i, t[: cfg.max_chars]) for i, t in positives), cap, cfg.seed, "pos")
    neg = _sample(((i, t[: cfg.max_chars]) for i, t in negatives), cap, cfg.seed, "neg")
    held = lambda doc_id: in_hash_share(f"{cfg.seed}:heldout:{doc_id}", cfg.heldout_fraction)  # noqa: E731
    train = [(t, 1) for i, t in pos if not held(i)] + [(t, 0) for i, t in neg if not held(i)]
    test = [(t, 1) for i, t in pos if held(i)] + [(t, 0) for i, t in neg if held(i)]
    counts = {
        "train_pos": sum(y for _t, y in train),
        "train_neg": sum(1 - y for _t, y in train),
        "heldout_pos": sum(y for _t, y in test),
        "heldout_neg": sum(1 - y for _t, y in test),
    }
    if not counts["train_pos"] or not counts["train_neg"]:
        raise ValueError(
            f"quality model '{lang}': no training documents of the "
            f"{'positive' if not counts['train_pos'] else 'negative'} class after the language's filters "
            f"(positives {list(sources[0])}: {len(pos)} docs, negatives {list(sources[1])}: {len(neg)} docs)"
        )
    feats = Featurizer.from_config(lang, cfg)
    clf = LogisticRegression(
        C=cfg.c, solver="liblinear", class_weight="balanced", max_iter=1000, random_state=cfg.seed
    )
    clf.fit(feats.transform([t for t, _y in train]), np.array([y for _t, y in train]))
    weights = clf.coef_.ravel().astype(np.float32)
    intercept = float(clf.intercept_[0])
    metrics = {"precision": 0.0, "recall": 0.0, "auc": 0.0}
    held_scores: dict[str, list[float]] = {"positives": [], "negatives": []}
    if counts["heldout_pos"] and counts["heldout_neg"]:
        y = np.array([y for _t, y in test])
        p = _sigmoid(feats.transform([t for t, _y in test]) @ weights + intercept)
        pred = (p >= 0.5).astype(int)
        metrics = {
            "precision": round(float(precision_score(y, pred, zero_division=0)), 4),
            "recall": round(float(recall_score(y, pred, zero_division=0)), 4),
            "auc": round(float(roc_auc_score(y, p)), 4),
        }
        held_scores = {"positives": p[y == 1].tolist(), "negatives": p[y == 0].tolist()}
    top = np.argsort(weights)
    top_cols = [int(c) for c in top[::-1][:10]] + [int(c) for c in top[:10]]
    names = feats.names_of(top_cols, (t for t, _y in train))
    top_features = [
        {
            "class": "high" if weights[c] > 0 else "low",
            "feature": names.get(c, f"#{c}"),
            "weight": round(float(weights[c]), 4),
        }
        for c in top_cols
    ]
    info = {
        "lang": lang,
        "positives": list(sources[0]),
        "negatives": list(sources[1]),
        **counts,
        **metrics,
        "heldout_scores": {k: score_summary(v) for k, v in held_scores.items()},
        "top_features": top_features,
        "seconds": round(time.perf_counter() - start, 2),
        "features": {
            "word_ngrams": cfg.word_ngrams,
            "char_ngrams": list(cfg.char_ngrams),
            "hash_bits": cfg.hash_bits,
            "max_chars": cfg.max_chars,
        },
        "intercept": intercept,
    }
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / WEIGHTS_FILE, weights, allow_pickle=False)
        (tmp / MODEL_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    if log:
        log(f"quality model {lang}: {counts}, held-out auc {metrics['auc']}")
    return QualityModelResult(**{k: info[k] for k in QualityModelResult.__dataclass_fields__})


def _sigmoid(margin) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(margin, dtype=np.float64)))


def score_summary(scores: Sequence[float]) -> dict[str, float]:
    """n, mean and the 10/50/90 % quantiles of a list of scores."""
    if not len(scores):
        return {"n": 0}
    a = np.asarray(scores, dtype=np.float64)
    q = np.quantile(a, [0.1, 0.5, 0.9])
    return {
        "n": int(a.size),
        "mean": round(float(a.mean()), 4),
        "p10": round(float(q[0]), 4),
        "p50": round(float(q[1]), 4),
        "p90": round(float(q[2]), 4),
    }


class QualityScorer:
    """A trained model read back from its directory; `score(texts)` -> probabilities of high quality."""

    def __init__(self, model_dir: str | Path):
        model_dir = Path(model_dir)
        if not (model_dir / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{model_dir}: no quality model ({MODEL_FILE}); materialize quality_model/<lang>"
            )
        info = json.loads((model_dir / MODEL_FILE).read_text(encoding="utf-8"))
        f = info["features"]
        self.info = info
        self.featurizer = Featurizer(
            info["lang"], f["word_ngrams"], f["char_ngrams"], f["hash_bits"], f["max_chars"]
        )
        self.weights = np.load(model_dir / WEIGHTS_FILE, allow_pickle=False)
        self.intercept = float(info["intercept"])
        if self.weights.shape != (self.featurizer.width,):
            raise ValueError(
                f"{model_dir / WEIGHTS_FILE}: {self.weights.shape} weights, expected {self.featurizer.width}"
            )

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        return _sigmoid(self.featurizer.transform(texts) @ self.weights + self.intercept)

    def score_one(self, text: str) -> float:
        return float(_sigmoid(self.featurizer.margin(text, self.weights) + self.intercept))


def tie_break(doc_id: str, seed: int | str) -> int:
    """A document's fixed place among equal scores."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")


def rank(scores: Sequence[float], ids: Sequence[str], seed: int | str) -> np.ndarray:
    """Row indices best first: by score, ties by a seeded hash of the id."""
    ties = np.array([tie_break(i, seed) for i in ids], dtype=np.uint64)
    return np.lexsort((ties, -np.asarray(scores, dtype=np.float64)))


def top_share_mask(scores: Sequence[float], ids: Sequence[str], share: float, seed: int) -> np.ndarray:
    """Exactly round(share x n) documents kept (True), the best by score."""
    n = len(scores)
    k = int(round(share * n))
    keep = np.zeros(n, dtype=bool)
    keep[rank(scores, ids, seed)[:k]] = True
    return keep


def quality_buckets(
    scores: Sequence[float], ids: Sequence[str], top_shares: Sequence[float], seed: int | str
) -> np.ndarray:
    """Each document's bucket: 0 for the best `top_shares[0]` of the documents (round(share x n)), 1 up
    to `top_shares[1]`, ..., len(top_shares) for the rest."""
    n = len(scores)
    order = rank(scores, ids, seed)
    bucket = np.full(n, len(top_shares), dtype=np.int64)
    start = 0
    for b, share in enumerate(top_shares):
        end = int(round(share * n))
        bucket[order[start:end]] = b
        start = max(start, end)
    return bucket


@dataclass
class QualityStep:
    """Curation's quality step for one source: scores every document that passed the filters, and keeps
    them by the source's rule (`SourceQuality`)."""

    scorer: QualityScorer
    cfg: SourceQuality
    scores: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def load(cls, model_dir: str | Path, cfg: SourceQuality) -> QualityStep:
        return cls(QualityScorer(model_dir), cfg)

    def score(self, text: str) -> float:
        start = time.perf_counter()
        s = self.scorer.score_one(text)
        self.seconds += time.perf_counter() - start
        self.scores.append(s)
        return s

    def check(self, score: float) -> str | None:
        """The per-document decision (`min_score`); None keeps the document."""
        if self.cfg.min_score is not None and score < self.cfg.min_score:
            return f"quality {score:.3f} < {self.cfg.min_score:.3f}"
        return None

    def select(self, out_path: str | Path, excluded_path: str | Path, cap: int) -> dict | None:
        """`keep_top_share`: rewrite `out_path` with exactly its top share, and add the others to the
        excluded samples (up to `cap`). Returns what was dropped (docs, chars, per license) or None."""
        if self.cfg.keep_top_share is None:
            return None
        out_path = Path(out_path)
        cols = pq.read_table(out_path, columns=["id", "quality"])
        ids = cols["id"].to_pylist()
        scores = cols["quality"].to_numpy(zero_copy_only=False)
        keep = top_share_mask(scores, ids, self.cfg.keep_top_share, self.cfg.seed)
        threshold = float(scores[keep].min()) if keep.any() else None
        dropped: dict = {"docs": int((~keep).sum()), "chars": 0, "licenses": {}, "threshold": threshold}
        pf = pq.ParquetFile(out_path)
        samples = []
        with atomic_path(out_path) as tmp:
            writer = pq.ParquetWriter(tmp, pf.schema_arrow, compression="zstd")
            offset = 0
            for batch in pf.iter_batches(batch_size=2048):
                mask = keep[offset : offset + batch.num_rows]
                offset += batch.num_rows
                writer.write_table(pa.Table.from_batches([batch.filter(pa.array(mask))], pf.schema_arrow))
                gone = batch.filter(pa.array(~mask))
                if gone.num_rows:
                    dropped["chars"] += int(pc.sum(pc.utf8_length(gone["text"])).as_py() or 0)
                    for lic in gone["license"].to_pylist():
                        dropped["licenses"][lic] = dropped["licenses"].get(lic, 0) + 1
                    for d in gone.to_pylist():
                        if len(samples) < cap:
                            reason = f"quality {d['quality']:.3f} below the top {self.cfg.keep_top_share:.0%}"
                            if threshold is not None:
                                reason += f" (threshold {threshold:.3f})"
                            samples.append(
                                {
                                    "id": d["id"],
                                    "source": d["source"],
                                    "filter": "quality",
                                    "reason": reason,
                                    "text": d["text"],
                                }
                            )
            writer.close()
        if samples:
            excluded_path = Path(excluded_path)
            old = pq.read_table(excluded_path)
            new = pa.Table.from_pylist(samples, schema=old.schema)
            with atomic_path(excluded_path) as tmp:
                pq.write_table(pa.concat_tables([old, new]), tmp, compression="zstd")
        return dropped

    def summary(self, kept: int, dropped: dict | None = None) -> dict:
        """Scores, rule, threshold and kept share of one curated file, for the asset's metadata."""
        n = len(self.scores)
        threshold = self.cfg.min_score if dropped is None else dropped["threshold"]
        return {
            "scored": n,
            "kept": kept,
            "kept_share": round(kept / n, 6) if n else 0.0,
            "rule": (
                f"top {self.cfg.keep_top_share:g}"
                if self.cfg.keep_top_share is not None
                else f"score >= {self.cfg.min_score:g}"
                if self.cfg.min_score is not None
                else "score only"
            ),
            "threshold": threshold,
            "scores": score_summary(self.scores),
            "model_auc": self.scorer.info.get("auc"),
            "seconds": round(self.seconds, 3),
        }


def build_quality_model(
    positives: dict[str, str | Path],
    negatives: dict[str, str | Path],
    out_dir: str | Path,
    lang: str,
    lang_cfg,
    chain: Callable[[str, str | None], tuple[str, tuple[str, str] | None]],
    log: Callable[[str], None] | None = None,
) -> QualityModelResult:
    """The language's quality model from its sources' corpora (source -> corpus file or shard directory):
    each document goes through `chain` first, the language's filters and normalisation without perplexity
    or PII redaction (`data.curation.curate.Curator(lang, lang_cfg).filter`: (text, url) -> (text, reason or
    None)), so the model learns what the filters cannot tell apart. The chain is passed in because
    curation runs the quality step (`data/curation/curate.py` imports this module)."""
    cfg = lang_cfg.quality
    if cfg is None:
        raise ValueError(f"languages.{lang}: no quality model configured")

    def texts(corpora: dict[str, str | Path]):
        for source, path in corpora.items():
            for doc in iter_docs(path, columns=["id", "text", "url"]):
                text, rejected = chain(doc["text"], doc.get("url"))
                if rejected is None:
                    yield f"{source}:{doc['id']}", text

    return train_quality_model(
        texts(positives), texts(negatives), out_dir, lang, cfg, (list(positives), list(negatives)), log=log
    )


REPORT_SUFFIX = ".quality.json"


def report_path(curated_file: str | Path) -> Path:
    """Beside a curated file (`curated/<source>.parquet`, or a shard's), its quality step's report."""
    curated_file = Path(curated_file)
    return curated_file.with_name(curated_file.stem + REPORT_SUFFIX)


def read_reports(curated_dir: str | Path, source: str) -> list[dict]:
    """The quality reports of a source's curated files (one per shard), in shard order. Under an
    object-store root, those the store has committed (the cards that read them may run where the curated
    shards were never filled)."""
    curated_dir = Path(curated_dir)
    files = [
        f
        for f in store_cache.committed_files(curated_dir / source)
        if f.parent == curated_dir / source and f.name.endswith(REPORT_SUFFIX)
    ] or [curated_dir / f"{source}{REPORT_SUFFIX}"]
    reports = (store_cache.read_committed(f) for f in files)
    return [json.loads(r.decode("utf-8")) for r in reports if r is not None]


def describe(source: str, reports: list[dict]) -> str:
    """One line on a source's quality step: rule, kept of scored, threshold, median score, model AUC."""
    if not reports:
        return f"{source}: quality scores declared, no curation report yet"
    scored = sum(r["scored"] for r in reports)
    kept = sum(r["kept"] for r in reports)
    thresholds = [r["threshold"] for r in reports if r.get("threshold") is not None]
    medians = [r["scores"].get("p50") for r in reports if r["scores"].get("n")]
    parts = [
        f"{source}: {reports[0]['rule']}",
        f"kept {kept:,} of {scored:,} scored ({kept / scored:.1%})" if scored else "nothing scored",
    ]
    if thresholds:
        parts.append(
            f"threshold {min(thresholds):.3f}" + (f"-{max(thresholds):.3f}" if len(thresholds) > 1 else "")
        )
    if medians:
        parts.append(f"median score {float(np.median(medians)):.3f}")
    parts.append(f"model held-out AUC {reports[0].get('model_auc')}")
    return ", ".join(parts)
