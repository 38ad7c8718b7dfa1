"""Curation of one source: raw-text filters, normalisation, then filters, with a funnel and samples of
what was excluded and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from lm_platform.data.documents import DocWriter, iter_docs
from lm_platform.data.filters import build_filter
from lm_platform.data.normalize import normalize_text
from lm_platform.recipe.schema import LanguageConfig

EXCLUDED_SCHEMA = pa.schema(
    [("id", pa.string()), ("source", pa.string()), ("filter", pa.string()), ("reason", pa.string()),
     ("text", pa.string())]
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


def curate(
    in_path: str | Path,
    out_path: str | Path,
    excluded_path: str | Path,
    lang: str,
    cfg: LanguageConfig,
    max_excluded_per_filter: int = 1000,
) -> CurationResult:
    """Normalise and filter the documents of `in_path` into `out_path`; samples of excluded documents
    (up to `max_excluded_per_filter` per filter) go to `excluded_path` with their reason."""
    filters = [build_filter(f, lang) for f in cfg.filters]
    raw_filters = [f for f in filters if f.on_raw]
    text_filters = [f for f in filters if not f.on_raw]
    steps = [FunnelStep(f.name) for f in raw_filters] + [FunnelStep("normalize")]
    steps += [FunnelStep(f.name) for f in text_filters]
    excluded: dict[str, int] = {}
    licenses: dict[str, int] = {}
    docs_in = 0

    def reject(doc: dict, name: str, reason: str, text: str) -> None:
        excluded[name] = excluded.get(name, 0) + 1
        if excluded[name] <= max_excluded_per_filter:
            xw.write({"id": doc["id"], "source": doc["source"], "filter": name, "reason": reason, "text": text})

    with DocWriter(out_path) as out, DocWriter(excluded_path, schema=EXCLUDED_SCHEMA) as xw:
        for doc in iter_docs(in_path):
            docs_in += 1
            text = doc["text"]
            kept = True
            for i, flt in enumerate(raw_filters):
                steps[i].docs_in += 1
                steps[i].chars_in += len(text)
                reason = flt(text)
                if reason is not None:
                    reject(doc, flt.name, reason, text)
                    kept = False
                    break
                steps[i].docs_out += 1
                steps[i].chars_out += len(text)
            if not kept:
                continue
            norm = steps[len(raw_filters)]
            norm.docs_in += 1
            norm.chars_in += len(text)
            text = normalize_text(text, cfg.unicode_form)
            norm.docs_out += 1
            norm.chars_out += len(text)
            for j, flt in enumerate(text_filters, start=len(raw_filters) + 1):
                steps[j].docs_in += 1
                steps[j].chars_in += len(text)
                reason = flt(text)
                if reason is not None:
                    reject(doc, flt.name, reason, text)
                    kept = False
                    break
                steps[j].docs_out += 1
                steps[j].chars_out += len(text)
            if kept:
                out.write({**doc, "text": text})
                licenses[doc["license"]] = licenses.get(doc["license"], 0) + 1
    chars_out = steps[-1].chars_out
    return CurationResult(docs_in, out.count, chars_out, steps, excluded, licenses)
