"""Curation of one source: raw-text filters, normalisation (mojibake repair, Unicode form), then the
language's filters, then PII redaction, with a funnel and samples of what was excluded and why.

Streaming: documents are read in batches and written in batches, so memory stays bounded whatever the
size of the source; the perplexity threshold is absolute, so one pass decides.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lm_platform.atomic import write_json
from lm_platform.data.corpus.documents import DocWriter, iter_docs
from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters import Filter, build_filter
from lm_platform.data.curation.filters.resources import derive_stop_words, use_stop_words
from lm_platform.data.curation.normalize import normalize_text
from lm_platform.data.curation.pii import PiiCounts, Redactor
from lm_platform.data.curation.quality_model import QualityStep
from lm_platform.data.curation.quality_model import report_path as quality_report_path
from lm_platform.data.curation.reference_lm import (
    INFO_FILE,
    PerplexityScorer,
    ReferenceLMResult,
    in_hash_share,
    train_reference_lm,
)
from lm_platform.recipe.filters import LanguageConfig, PerplexityFilter

EXCLUDED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("filter", pa.string()),
        ("reason", pa.string()),
        ("text", pa.string()),
    ]
)


@dataclass
class FunnelStep:
    step: str
    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    seconds: float = 0.0  # wall time spent in the step


@dataclass
class CurationResult:
    docs_in: int
    docs_out: int
    chars_out: int
    funnel: list[FunnelStep]
    excluded_by_filter: dict[str, int] = field(default_factory=dict)
    licenses: dict[str, int] = field(default_factory=dict)
    pii: dict[str, int] = field(default_factory=dict)
    perplexity_gates: list[dict[str, float | None]] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)  # per curated file: scores, rule, threshold, kept share

    @property
    def keep_rate(self) -> float:
        return self.docs_out / self.docs_in if self.docs_in else 0.0


class Curator:
    """The per-document chain for one language; `run(text, url)` -> (text, None) or (text, (filter,
    reason)). Kept separate from file handling so benchmarks and tests can drive it directly."""

    def __init__(self, lang: str, cfg: LanguageConfig, stop_words: tuple[str, ...] | None = None):
        # The language's stop words (the recipe's, or `stop_words` derived from its high-quality source)
        # for the filters built here; else the platform's table.
        use_stop_words(lang, cfg.stop_words or stop_words)
        filters = [build_filter(f, lang) for f in cfg.filters if not isinstance(f, PerplexityFilter)]
        self.lang, self.cfg = lang, cfg
        self.raw: list[Filter] = [f for f in filters if f.on_raw]
        self.text: list[Filter] = [f for f in filters if not f.on_raw]
        self.steps = [FunnelStep(f.name) for f in self.raw] + [FunnelStep("normalize")]
        self.steps += [FunnelStep(f.name) for f in self.text]
        if cfg.perplexity is not None:  # scored by curate(), over the documents that pass
            self.steps.append(FunnelStep("perplexity"))
        self.redactor = Redactor(cfg.pii) if cfg.pii is not None else None
        if self.redactor is not None:
            self.steps.append(FunnelStep("pii"))
        self.pii = PiiCounts()

    def _through(self, step: FunnelStep, flt: Filter, doc: Doc) -> str | None:
        step.docs_in += 1
        step.chars_in += len(doc.text)
        start = time.perf_counter()
        reason = flt.check(doc)
        step.seconds += time.perf_counter() - start
        if reason is None:
            step.docs_out += 1
            step.chars_out += len(doc.text)
        return reason

    def run(self, text: str, url: str | None = None) -> tuple[str, tuple[str, str] | None]:
        text, rejected = self.filter(text, url)
        return (text, rejected) if rejected is not None else (self.redact(text), None)

    def filter(self, text: str, url: str | None = None) -> tuple[str, tuple[str, str] | None]:
        """Raw filters, normalisation and the language's filters (no PII redaction)."""
        doc = Doc(text, self.lang, url)
        for step, flt in zip(self.steps, self.raw, strict=False):
            reason = self._through(step, flt, doc)
            if reason is not None:
                return doc.text, (flt.name, reason)
        norm = self.steps[len(self.raw)]
        norm.docs_in += 1
        norm.chars_in += len(doc.text)
        start = time.perf_counter()
        doc = Doc(normalize_text(doc.text, self.cfg.unicode_form, self.cfg.fix_mojibake), self.lang, url)
        norm.seconds += time.perf_counter() - start
        norm.docs_out += 1
        norm.chars_out += len(doc.text)
        for step, flt in zip(self.steps[len(self.raw) + 1 :], self.text, strict=False):
            reason = self._through(step, flt, doc)
            if reason is not None:
                return doc.text, (flt.name, reason)
        return doc.text, None

    def redact(self, text: str) -> str:
        if self.redactor is not None:
            step = self.steps[-1]
            step.docs_in += 1
            step.chars_in += len(text)
            start = time.perf_counter()
            text = self.redactor.redact(text, self.pii)
            step.seconds += time.perf_counter() - start
            step.docs_out += 1
            step.chars_out += len(text)
        return text


def _iter_shard(path: str | Path, shard: tuple[int, int] | None):
    if shard is None:
        yield from iter_docs(path)
        return
    index, count = shard
    pf = pq.ParquetFile(path)
    groups = list(range(index, pf.metadata.num_row_groups, count))
    if groups:
        for batch in pf.iter_batches(batch_size=2048, row_groups=groups):
            yield from batch.to_pylist()


class _Excluded:
    """Excluded documents: counted per filter, and a sample of each (up to a cap) written with its
    reason."""

    def __init__(self, writer: DocWriter, cap: int):
        self.writer, self.cap = writer, cap
        self.counts: dict[str, int] = {}

    def add(self, doc: dict, name: str, reason: str, text: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        if self.counts[name] <= self.cap:
            self.writer.write(
                {"id": doc["id"], "source": doc["source"], "filter": name, "reason": reason, "text": text}
            )


def keep_at_random(doc_id: str, share: float, seed: int) -> bool:
    """The perplexity filter's random share of documents above its threshold: fixed per document id."""
    return in_hash_share(f"{seed}:{doc_id}", share)


class PerplexityGate:
    """The perplexity filter: scores a document with the reference (or user-supplied) KenLM model and
    keeps it when the score is at most the absolute threshold (`max_perplexity`, else `max_ratio` x
    the reference model's held-out perplexity), or when it falls in the seeded random share
    `keep_rest` of the others."""

    def __init__(self, cfg: PerplexityFilter, reference_lm: str | Path | None = None, lang: str = ""):
        self.cfg = cfg
        if cfg.model is not None:
            self.scorer = PerplexityScorer(cfg.model, lang, cfg.sp_model)
            self.heldout: float | None = None
        else:
            if reference_lm is None:
                raise ValueError(
                    f"languages.{lang}: the perplexity filter needs the reference_lm/{lang} model"
                )
            self.scorer = PerplexityScorer.from_reference(reference_lm)
            info = json.loads((Path(reference_lm) / INFO_FILE).read_text(encoding="utf-8"))
            self.heldout = info.get("heldout_perplexity")
        self.source_median: float | None = None
        if cfg.max_perplexity is not None:
            self.threshold = float(cfg.max_perplexity)
        elif self.heldout:
            self.threshold = cfg.max_ratio * float(self.heldout)
        else:
            raise ValueError(
                f"{reference_lm}: the reference model has no held-out perplexity (heldout_fraction 0?), so "
                "max_ratio cannot be calibrated; set max_perplexity or a heldout_fraction above 0"
            )

    @property
    def per_source(self) -> bool:
        return self.cfg.calibrate == "source" and self.cfg.max_perplexity is None

    def calibrate(self, scores: list[float]) -> None:
        """Set the threshold for one source from its own documents' scores (those that passed the other
        filters): max_ratio x max(held-out perplexity, the scores' median), the median raising it by at
        most `max_source_shift`. A clean source of the reference's own domain has its median near the
        held-out perplexity (nothing changes); news or forums scored by a model of Wikipedia sit higher,
        all of them, and a threshold set in one domain would remove a share of the other's clean text."""
        if not self.per_source or not scores or not self.heldout:
            return
        ordered = sorted(scores)
        mid = len(ordered) // 2
        median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        self.source_median = float(median)
        base = min(max(float(self.heldout), median), self.cfg.max_source_shift * float(self.heldout))
        self.threshold = self.cfg.max_ratio * base

    def score(self, text: str) -> float:
        return self.scorer.perplexity(text)

    def too_short(self, text: str) -> bool:
        """Too few tokens for a stable perplexity (`min_tokens`): not judged by it."""
        if not self.cfg.min_tokens:
            return False
        return self.scorer.log10_prob(text)[1] < self.cfg.min_tokens

    def check(self, text: str, doc_id: str = "", score: float | None = None) -> str | None:
        if self.too_short(text):
            return None
        score = self.score(text) if score is None else score
        if score <= self.threshold or keep_at_random(doc_id, self.cfg.keep_rest, self.cfg.seed):
            return None
        return f"perplexity {score:.1f} > {self.threshold:.1f}"

    def summary(self, scored: int, kept_at_random: int) -> dict[str, float | None]:
        return {
            "threshold": round(self.threshold, 3),
            "heldout_perplexity": self.heldout,
            "max_ratio": self.cfg.max_ratio if self.cfg.max_perplexity is None else None,
            "source_median": None if self.source_median is None else round(self.source_median, 3),
            "scored": scored,
            "kept_at_random": kept_at_random,
        }


def language_stop_words(cfg: LanguageConfig, corpus: str | Path | None) -> tuple[str, ...] | None:
    """The language's stop words when the recipe derives them (`stop_words_from`): the most common words
    of its high-quality source's `corpus` (normalised as curation normalises); None otherwise."""
    if cfg.stop_words or cfg.stop_words_from is None:
        return None
    if corpus is None:
        raise ValueError(
            f"stop_words_from '{cfg.stop_words_from}': the source's corpus is needed to derive them"
        )
    texts = (
        normalize_text(d["text"], cfg.unicode_form, cfg.fix_mojibake)
        for d in iter_docs(corpus, columns=["text"])
    )
    return derive_stop_words(texts)


def calibration_scores(in_path: str | Path, chain: Curator, gate: PerplexityGate) -> list[float]:
    """Scores of a fixed sample of the source's documents (chosen by id, over the whole input whatever
    the shard, so every shard of a source gets the same threshold) that pass the other filters."""
    limit = gate.cfg.calibration_docs
    ids = [d["id"] for d in iter_docs(in_path, columns=["id"], batch_size=8192)]
    if len(ids) > limit:
        ranked = sorted(ids, key=lambda i: hashlib.blake2b(f"calibrate:{i}".encode(), digest_size=8).digest())
        chosen = set(ranked[:limit])
    else:
        chosen = set(ids)
    scores = []
    for doc in iter_docs(in_path, columns=["id", "text", "url"]):
        if doc["id"] not in chosen:
            continue
        text, rejected = chain.filter(doc["text"], doc.get("url"))
        if rejected is None:
            scores.append(gate.score(text))
    return scores


def curate(
    in_path: str | Path,
    out_path: str | Path,
    excluded_path: str | Path,
    lang: str,
    cfg: LanguageConfig,
    max_excluded_per_filter: int = 1000,
    shard: tuple[int, int] | None = None,
    reference_lm: str | Path | None = None,
    quality: QualityStep | None = None,
    stop_words_corpus: str | Path | None = None,
) -> CurationResult:
    """Normalise, filter and redact the documents of `in_path` into `out_path`; samples of excluded
    documents (up to `max_excluded_per_filter` per filter) go to `excluded_path` with their reason.

    `shard=(i, n)` curates only shard i of n: the input's Parquet row groups i, i+n, i+2n, ... so that
    shards are disjoint, cover the input, and each reads only its own part.

    With a `perplexity` filter (the language's last), every document that passes the others is scored by
    the KenLM model (`reference_lm`: the directory the reference_lm asset wrote, unless the filter names
    its own model) and kept when its perplexity is under the filter's threshold, set per source from a
    fixed sample of the whole source (`calibrate: source`) before the pass: the same decision for a
    document whatever shard it is in.

    `stop_words_corpus`: the corpus of the language's `stop_words_from` source, when the recipe derives
    the language's stop words from it.

    With `quality` (the source declares `quality`), every document that passes scores with the language's
    quality model into the `quality` column, and the source's rule keeps it (`min_score`) or keeps
    exactly its top share of this file (`keep_top_share`: decided after the pass, `QualityStep.select`)."""
    words = language_stop_words(cfg, stop_words_corpus)
    chain = Curator(lang, cfg, words)
    ppl = cfg.perplexity
    gate = PerplexityGate(ppl, reference_lm, lang) if ppl is not None else None
    if gate is not None and gate.per_source:
        gate.calibrate(calibration_scores(in_path, Curator(lang, cfg, words), gate))
    step = next((s for s in chain.steps if s.step == "perplexity"), None)
    qstep = FunnelStep("quality") if quality is not None else None
    if qstep is not None:  # before PII redaction (`Curator.redact` counts into the last step)
        chain.steps.insert(len(chain.steps) - (chain.redactor is not None), qstep)
    licenses: dict[str, int] = {}
    docs_in = chars_out = scored = kept_at_random = 0
    out_path = Path(out_path)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(DocWriter(out_path))
        excluded = _Excluded(
            stack.enter_context(DocWriter(excluded_path, schema=EXCLUDED_SCHEMA)), max_excluded_per_filter
        )
        for doc in _iter_shard(in_path, shard):
            docs_in += 1
            text, rejected = chain.filter(doc["text"], doc.get("url"))
            if rejected is not None:
                excluded.add(doc, *rejected, text)
                continue
            score = None
            if gate is not None and step is not None:
                start = time.perf_counter()
                score = gate.score(text)
                step.seconds += time.perf_counter() - start
                scored += 1
                step.docs_in += 1
                step.chars_in += len(text)
                reason = gate.check(text, doc["id"], score)
                if reason is not None:
                    excluded.add(doc, "perplexity", reason, text)
                    continue
                kept_at_random += score > gate.threshold
                step.docs_out += 1
                step.chars_out += len(text)
            q = None
            if quality is not None and qstep is not None:
                qstep.docs_in += 1
                qstep.chars_in += len(text)
                q = quality.score(text)
                reason = quality.check(q)
                if reason is not None:
                    excluded.add(doc, "quality", reason, text)
                    continue
                qstep.docs_out += 1
                qstep.chars_out += len(text)
            text = chain.redact(text)
            out.write({**doc, "text": text, "perplexity": score, "quality": q})
            chars_out += len(text)
            licenses[doc["license"]] = licenses.get(doc["license"], 0) + 1
    docs_out = out.count
    if quality is not None and qstep is not None:
        qstep.seconds = quality.seconds
        dropped = quality.select(out_path, excluded_path, max_excluded_per_filter)
        if dropped:  # keep_top_share: decided after the pass, so the funnel's last step
            chain.steps.remove(qstep)
            chain.steps.append(qstep)
            docs_out -= dropped["docs"]
            chars_out -= dropped["chars"]
            qstep.docs_out -= dropped["docs"]
            qstep.chars_out -= dropped["chars"]
            excluded.counts["quality"] = excluded.counts.get("quality", 0) + dropped["docs"]
            for lic, n in dropped["licenses"].items():
                licenses[lic] -= n
            licenses = {k: v for k, v in licenses.items() if v}
    qreport = [quality.summary(qstep.docs_out, dropped)] if quality is not None and qstep is not None else []
    if qreport:
        write_json(quality_report_path(out_path), qreport[0])
    return CurationResult(
        docs_in,
        docs_out,
        chars_out,
        chain.steps,
        excluded.counts,
        licenses,
        chain.pii.as_dict() if chain.redactor else {},
        [gate.summary(scored, kept_at_random)] if gate is not None else [],
        qreport,
    )


def build_reference_lm(
    corpus_path: str | Path,
    out_dir: str | Path,
    lang: str,
    cfg: LanguageConfig,
    seed: int = 0,
    log=None,
    stop_words_corpus: str | Path | None = None,
) -> ReferenceLMResult:
    """The language's reference KenLM model, trained on its high-quality source's corpus after the
    language's other filters and normalisation (not PII redaction: placeholders are no language)."""
    if cfg.reference_lm is None:
        raise ValueError(f"languages.{lang}: no reference_lm configured")
    chain = Curator(lang, cfg, language_stop_words(cfg, stop_words_corpus))

    def texts():
        for doc in iter_docs(corpus_path, columns=["id", "text", "url"]):
            text, rejected = chain.filter(doc["text"], doc.get("url"))
            if rejected is None:
                yield doc["id"], text

    return train_reference_lm(texts(), out_dir, lang, cfg.reference_lm, seed=seed, log=log)


def merge_results(results: list[CurationResult]) -> CurationResult:
    """One result for several shards of a source: counts, funnel steps, exclusions, licenses and PII
    summed."""

    def add(dicts):
        out: dict[str, int] = {}
        for d in dicts:
            for k, v in d.items():
                out[k] = out.get(k, 0) + v
        return out

    funnel = [FunnelStep(step.step) for step in results[0].funnel] if results else []
    for res in results:
        for total, step in zip(funnel, res.funnel, strict=True):
            total.docs_in += step.docs_in
            total.docs_out += step.docs_out
            total.chars_in += step.chars_in
            total.chars_out += step.chars_out
            total.seconds += step.seconds
    return CurationResult(
        sum(r.docs_in for r in results),
        sum(r.docs_out for r in results),
        sum(r.chars_out for r in results),
        funnel,
        add(r.excluded_by_filter for r in results),
        add(r.licenses for r in results),
        add(r.pii for r in results),
        [b for r in results for b in r.perplexity_gates],
        [q for r in results for q in r.quality],
    )
