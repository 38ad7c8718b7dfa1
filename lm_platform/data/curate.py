"""Curation of one source: raw-text filters, normalisation (mojibake repair, Unicode form), then the
language's filters, then PII redaction, with a funnel and samples of what was excluded and why.

Streaming: documents are read in batches and written in batches, so memory stays bounded whatever the
size of the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lm_platform.data.documents import DocWriter, iter_docs
from lm_platform.data.filters import Filter, build_filter
from lm_platform.data.normalize import normalize_text
from lm_platform.data.pii import PiiCounts, Redactor
from lm_platform.data.text import Doc
from lm_platform.recipe.schema import LanguageConfig

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


@dataclass
class CurationResult:
    docs_in: int
    docs_out: int
    chars_out: int
    funnel: list[FunnelStep]
    excluded_by_filter: dict[str, int] = field(default_factory=dict)
    licenses: dict[str, int] = field(default_factory=dict)
    pii: dict[str, int] = field(default_factory=dict)

    @property
    def keep_rate(self) -> float:
        return self.docs_out / self.docs_in if self.docs_in else 0.0


class Curator:
    """The per-document chain for one language; `run(text, url)` -> (text, None) or (text, (filter,
    reason)). Kept separate from file handling so benchmarks and tests can drive it directly."""

    def __init__(self, lang: str, cfg: LanguageConfig):
        filters = [build_filter(f, lang) for f in cfg.filters]
        self.lang, self.cfg = lang, cfg
        self.raw: list[Filter] = [f for f in filters if f.on_raw]
        self.text: list[Filter] = [f for f in filters if not f.on_raw]
        self.steps = [FunnelStep(f.name) for f in self.raw] + [FunnelStep("normalize")]
        self.steps += [FunnelStep(f.name) for f in self.text]
        self.redactor = Redactor(cfg.pii) if cfg.pii is not None else None
        if self.redactor is not None:
            self.steps.append(FunnelStep("pii"))
        self.pii = PiiCounts()

    def _through(self, step: FunnelStep, flt: Filter, doc: Doc) -> str | None:
        step.docs_in += 1
        step.chars_in += len(doc.text)
        reason = flt.check(doc)
        if reason is None:
            step.docs_out += 1
            step.chars_out += len(doc.text)
        return reason

    def run(self, text: str, url: str | None = None) -> tuple[str, tuple[str, str] | None]:
        doc = Doc(text, self.lang, url)
        for step, flt in zip(self.steps, self.raw, strict=False):
            reason = self._through(step, flt, doc)
            if reason is not None:
                return doc.text, (flt.name, reason)
        norm = self.steps[len(self.raw)]
        norm.docs_in += 1
        norm.chars_in += len(doc.text)
        doc = Doc(normalize_text(doc.text, self.cfg.unicode_form, self.cfg.fix_mojibake), self.lang, url)
        norm.docs_out += 1
        norm.chars_out += len(doc.text)
        for step, flt in zip(self.steps[len(self.raw) + 1 :], self.text, strict=False):
            reason = self._through(step, flt, doc)
            if reason is not None:
                return doc.text, (flt.name, reason)
        text = doc.text
        if self.redactor is not None:
            step = self.steps[-1]
            step.docs_in += 1
            step.chars_in += len(text)
            text = self.redactor.redact(text, self.pii)
            step.docs_out += 1
            step.chars_out += len(text)
        return text, None


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


def curate(
    in_path: str | Path,
    out_path: str | Path,
    excluded_path: str | Path,
    lang: str,
    cfg: LanguageConfig,
    max_excluded_per_filter: int = 1000,
    shard: tuple[int, int] | None = None,
) -> CurationResult:
    """Normalise, filter and redact the documents of `in_path` into `out_path`; samples of excluded
    documents (up to `max_excluded_per_filter` per filter) go to `excluded_path` with their reason.

    `shard=(i, n)` curates only shard i of n: the input's Parquet row groups i, i+n, i+2n, ... so that
    shards are disjoint, cover the input, and each reads only its own part."""
    chain = Curator(lang, cfg)
    excluded: dict[str, int] = {}
    licenses: dict[str, int] = {}
    docs_in = chars_out = 0
    with DocWriter(out_path) as out, DocWriter(excluded_path, schema=EXCLUDED_SCHEMA) as xw:
        for doc in _iter_shard(in_path, shard):
            docs_in += 1
            text, rejected = chain.run(doc["text"], doc.get("url"))
            if rejected is not None:
                name, reason = rejected
                excluded[name] = excluded.get(name, 0) + 1
                if excluded[name] <= max_excluded_per_filter:
                    xw.write(
                        {
                            "id": doc["id"],
                            "source": doc["source"],
                            "filter": name,
                            "reason": reason,
                            "text": text,
                        }
                    )
                continue
            out.write({**doc, "text": text})
            chars_out += len(text)
            licenses[doc["license"]] = licenses.get(doc["license"], 0) + 1
    return CurationResult(
        docs_in,
        out.count,
        chars_out,
        chain.steps,
        excluded,
        licenses,
        chain.pii.as_dict() if chain.redactor else {},
    )


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
    return CurationResult(
        sum(r.docs_in for r in results),
        sum(r.docs_out for r in results),
        sum(r.chars_out for r in results),
        funnel,
        add(r.excluded_by_filter for r in results),
        add(r.licenses for r in results),
        add(r.pii for r in results),
    )
