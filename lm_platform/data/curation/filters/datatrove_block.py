"""Any datatrove filter block inside our chain: teams with datatrove pipelines bring their filters along.

    - {name: datatrove, block: datatrove.pipeline.filters.GopherQualityFilter, args: {min_doc_words: 30}}

The block is imported by class path and built with `args` once per language; each document goes
through its `filter(Document)` exactly as datatrove's own pipeline calls it, and a rejection becomes
our funnel step `datatrove:<ClassName>` with datatrove's reason (or "rejected" when it gives none) in
the excluded samples. A block that rewrites the text (C4QualityFilter) rewrites ours too.
"""

from __future__ import annotations

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.recipe.filter_settings import DatatroveFilter, load_block


class Datatrove(Filter):
    name = "datatrove"

    def __init__(self, cfg: DatatroveFilter, lang: str):
        super().__init__(cfg, lang)
        self.block = load_block(cfg.block)(**cfg.args)
        self.name = f"datatrove:{type(self.block).__name__}"

    def check(self, doc: Doc) -> str | None:
        from datatrove.data import Document

        item = Document(text=doc.text, id="doc", metadata={"url": doc.url} if doc.url else {})
        result = self.block.filter(item)
        keep, reason = result if isinstance(result, tuple) else (result, None)
        if not keep:
            return reason or "rejected"
        if item.text != doc.text:
            doc.replace_text(item.text)
        return None
