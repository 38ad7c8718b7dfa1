"""A document file packed the way the platform packs: each source tokenized once (`tokenize_source`,
as `tokens/<source>`), a document list naming every document in file order (what `blend_tokens`
writes), then `pack_tokens`. For tests that start from text."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lm_platform.data.blending.blend import DOCLIST_FILE
from lm_platform.data.blending.pack import PackResult, pack_tokens
from lm_platform.data.blending.tokens import tokenize_source
from lm_platform.data.corpus.documents import DocWriter, iter_docs


def pack_text(
    docs_file: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    seq_len: int,
    val_fraction: float = 0.05,
    *,
    work_dir: str | Path | None = None,
    part_rows: int = 65_536,
    **pack_args,
) -> PackResult:
    """Pack every document of `docs_file` (the document schema) into `out_dir` through the token shards;
    `pack_args` go to `pack_tokens` (shuffle_buffer defaults to 0 here: the file's order)."""
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir.parent / f"{out_dir.name}.work"
    by_source: dict[str, list[dict]] = {}
    order: list[tuple[str, int]] = []
    for doc in iter_docs(docs_file):
        rows = by_source.setdefault(doc["source"], [])
        order.append((doc["source"], len(rows)))
        rows.append(doc)
    tokens_dirs = {}
    for source, rows in by_source.items():
        path = work / "deduped" / f"{source}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with DocWriter(path, batch_size=max(1, min(part_rows, 1024))) as w:
            w.write_all(rows)
        tokens_dirs[source] = work / "tokens" / source
        tokenize_source(path, tokenizer_dir, tokens_dirs[source], source=source, part_rows=part_rows)
    blend_dir = work / "blend"
    blend_dir.mkdir(parents=True, exist_ok=True)
    doclist = pa.table({"source": [s for s, _ in order], "doc": pa.array([d for _, d in order], pa.int64())})
    pq.write_table(doclist, blend_dir / DOCLIST_FILE)
    pack_args.setdefault("shuffle_buffer", 0)
    return pack_tokens(blend_dir, tokens_dirs, tokenizer_dir, out_dir, seq_len, val_fraction, **pack_args)
