"""Any datatrove filter block inside our chain: teams with datatrove pipelines bring their filters along.

    - {name: datatrove, block: datatrove.pipeline.filters.GopherQualityFilter, args: {min_doc_words: 30}}

The block is imported by class path and built with `args` once per language; each document goes
through its `filter(Document)` exactly as datatrove's own pipeline calls it, and a rejection becomes
our funnel step `datatrove:<ClassName>` with datatrove's reason (or "rejected" when it gives none) in
the excluded samples. A block that rewrites the text (C4QualityFilter) rewrites ours too.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.recipe.base import StrictConfig


def load_block(path: str) -> type:
    """The datatrove filter class at `path` (module.Class); a clear error when it is not one."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"block '{path}' is not a class path (module.ClassName)")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"block '{path}' cannot be imported: {exc}") from exc
    from datatrove.pipeline.filters.base_filter import BaseFilter

    if not (inspect.isclass(cls) and issubclass(cls, BaseFilter)):
        raise ValueError(f"block '{path}' is not a datatrove filter (a subclass of BaseFilter)")
    return cls


class DatatroveFilter(StrictConfig):
    """A datatrove filter block by class path, with its constructor arguments."""

    name: Literal["datatrove"] = "datatrove"
    block: str = Field(description="Class path, e.g. datatrove.pipeline.filters.GopherQualityFilter")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the block")

    @field_validator("block")
    @classmethod
    def _importable(cls, block: str) -> str:
        load_block(block)
        return block

    @model_validator(mode="after")
    def _args_fit(self) -> DatatroveFilter:
        cls = load_block(self.block)
        try:
            inspect.signature(cls.__init__).bind(None, **self.args)
        except TypeError as exc:
            raise ValueError(f"args do not fit {self.block}: {exc}") from exc
        return self


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
