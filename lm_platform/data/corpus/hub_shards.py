"""Sharded reading of a hub-format source: shard i of n reads only its own data files, so no single pod
streams a whole multi-GB source (the k8s profile runs one pod per shard).

The dataset's data files (Parquet/JSON) are listed once (a hub dataset's resolved `data_files` for the
source's config and split, or the files of a local directory in a hub dataset's formats), sorted, and
dealt round-robin: shard i reads files i, i+n, i+2n, ... Shards are disjoint and cover the source. Each
file is streamed on its own, so a document's fallback id (file, row in file) is the same however many
shards there are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from lm_platform.data.corpus.documents import Document
from lm_platform.data.corpus.readers import ReadStats, _files, _to_doc
from lm_platform.recipe.schema import SourceConfig

HUB_SUFFIXES = (".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz")


def shard_files(files: Sequence[str], index: int, count: int) -> list[str]:
    """The files of shard `index` of `count` (sorted, round-robin)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index} of {count} does not exist")
    return sorted(files)[index::count]


def hub_data_files(src: SourceConfig) -> list[str]:
    """Every data file of the source: a local directory's hub-format files, or the hub dataset's files
    for its config and split (resolved by `datasets`; needs the hub at run time, as the source does)."""
    location = Path(src.location)
    if location.exists():
        return [str(p) for p in _files(location, HUB_SUFFIXES)]
    import datasets

    builder = datasets.load_dataset_builder(src.location, src.hf_config)
    files = (builder.config.data_files or {}).get(src.hf_split)
    if not files:
        raise ValueError(f"source '{src.name}': no data files for split '{src.hf_split}' in {src.location}")
    return [str(f) for f in files]


def read_hub_shard(
    src: SourceConfig,
    index: int,
    count: int,
    stats: ReadStats | None = None,
    files: Sequence[str] | None = None,
) -> Iterator[Document]:
    """Stream shard `index` of `count` of a hub-format source, one data file at a time."""
    import datasets

    stats = stats if stats is not None else ReadStats()
    for file in shard_files(files if files is not None else hub_data_files(src), index, count):
        builder = "parquet" if file.endswith(".parquet") else "json"
        ds = datasets.load_dataset(builder, data_files=[file], split="train", streaming=True)
        for row, record in enumerate(ds, start=1):
            doc = _to_doc(dict(record), src, file, row, stats)
            if doc is not None:
                yield doc


def read_corpus_shard(
    src: SourceConfig, index: int, count: int, stats: ReadStats | None = None, chars_per_token: float = 4.0
) -> Iterator[Document]:
    """Shard `index` of `count` of a source's corpus read: `read_hub_shard` up to the source's caps split
    evenly over the shards (`max_docs` and `max_est_tokens` each divided by `count`, rounded up)."""
    max_docs = -(-src.max_docs // count) if src.max_docs is not None else None
    max_tokens = -(-src.max_est_tokens // count) if src.max_est_tokens is not None else None
    chars = 0
    for n, doc in enumerate(read_hub_shard(src, index, count, stats)):
        if (max_docs is not None and n >= max_docs) or (
            max_tokens is not None and chars / chars_per_token >= max_tokens
        ):
            return
        chars += len(doc["text"])
        yield doc
