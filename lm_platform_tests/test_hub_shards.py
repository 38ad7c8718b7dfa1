"""Sharded corpus read of a hub-format source: each shard reads only its own files; the shards are
disjoint and together give exactly the unsharded read."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lm_platform.data.corpus.hub_shards import hub_data_files, read_hub_shard, shard_files
from lm_platform.data.corpus.readers import ReadStats
from lm_platform.recipe.schema import SourceConfig


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "ds" / "data"
    root.mkdir(parents=True)
    for f in range(7):
        rows = [{"text": f"document {f}-{r} " * 5, "url": f"https://x/{f}/{r}"} for r in range(3 + f)]
        pq.write_table(pa.Table.from_pylist(rows), root / f"train-{f:05d}-of-00007.parquet")
    return SourceConfig(
        name="web", location=str(tmp_path / "ds"), format="hf", license="CC0-1.0", language="en", shards=3
    )


def test_shard_files_are_disjoint_and_cover():
    files = [f"f{i}" for i in range(10)]
    parts = [shard_files(files, i, 4) for i in range(4)]
    assert sorted(sum(parts, [])) == sorted(files)
    assert all(not set(a) & set(b) for i, a in enumerate(parts) for b in parts[i + 1 :])
    with pytest.raises(ValueError, match="shard 4 of 4 does not exist"):
        shard_files(files, 4, 4)


def test_shards_read_only_their_files_and_together_equal_the_whole(source):
    files = hub_data_files(source)
    assert len(files) == 7
    whole = list(read_hub_shard(source, 0, 1))
    shards = [list(read_hub_shard(source, i, 3, files=files)) for i in range(3)]
    ids = [{d["id"] for d in s} for s in shards]
    assert sum(len(s) for s in shards) == len(whole) == sum(3 + f for f in range(7))
    assert set().union(*ids) == {d["id"] for d in whole}, "ids do not depend on the shard count"
    assert not ids[0] & ids[1] and not ids[1] & ids[2]
    # Shard 1 read files 1 and 4 only.
    assert {d["text"].split()[1].split("-")[0] for d in shards[1]} == {"1", "4"}
    stats = ReadStats()
    list(read_hub_shard(source, 2, 3, stats=stats, files=files))
    assert stats.read == len(shards[2])
