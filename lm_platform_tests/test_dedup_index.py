"""The persistent exact-dedup index: incremental across runs and sources, priority, kill safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lm_platform.data.corpus.documents import DocWriter, iter_docs, make_doc
from lm_platform.data.dedup.dedup_index import ExactIndex
from lm_platform.data.dedup.exact import dedup_exact_indexed, exact_shards

REPO = Path(__file__).resolve().parents[1]


def write_shard(path: Path, source: str, texts: list[str], start: int = 0) -> Path:
    with DocWriter(path) as w:
        for i, t in enumerate(texts):
            w.write(make_doc(f"{source}-{start + i}", t, source, "CC0-1.0", "en"))
    return path


def kept_ids(out_dir: Path) -> list[str]:
    return [d["id"] for shard in exact_shards(out_dir) for d in iter_docs(shard)]


def run(index_dir, shards, out, source, priority, rank, partitions=4):
    with ExactIndex(index_dir, partitions=partitions) as index:
        return dedup_exact_indexed(shards, out, source, index, priority=priority, source_rank=rank)


def test_incremental_across_two_runs_and_two_sources_with_priority(tmp_path):
    idx = tmp_path / "index"
    web1 = write_shard(tmp_path / "web1.parquet", "web", ["Alpha text", "beta text", "beta  TEXT!", "gamma"])
    books = write_shard(tmp_path / "books.parquet", "books", ["alpha text.", "delta", "Delta"])
    # Run 1: only the web source exists yet; it keeps one copy of each text.
    r1 = run(idx, [web1], tmp_path / "web_out", "web", priority=0, rank=1)
    assert kept_ids(tmp_path / "web_out") == ["web-0", "web-1", "web-3"]
    assert (r1.exact_removed, r1.cross_source_removed) == (1, 0)
    # Run 2 (a new process would see the same files): the encyclopedic source arrives with a higher
    # priority and takes over the text it shares with the web.
    r2 = run(idx, [books], tmp_path / "books_out", "books", priority=2, rank=0)
    assert kept_ids(tmp_path / "books_out") == ["books-0", "books-1"]
    assert (r2.exact_removed, r2.cross_source_removed) == (1, 0)
    # The web source gets a new shard; re-deduplicating it drops its copy of the book and the new
    # shard's copies of anything kept before, across both runs and both sources.
    web2 = write_shard(
        tmp_path / "web2.parquet", "web", ["gamma", "DELTA", "epsilon", "alpha, text"], start=4
    )
    r3 = run(idx, [web1, web2], tmp_path / "web_out", "web", priority=0, rank=1)
    assert kept_ids(tmp_path / "web_out") == ["web-1", "web-3", "web-6"]
    assert r3.cross_source_hits == {"books": 3}
    assert r3.exact_removed == 2  # "beta  TEXT!" and the second "gamma"
    with ExactIndex(idx, partitions=4) as index:
        stats = index.stats()
        assert stats["keys"] == 5 and stats["per_source"] == {"web": 3, "books": 2}
        assert all(v == "ok" for v in index.integrity())


def test_outcome_does_not_depend_on_indexing_order(tmp_path):
    web = write_shard(tmp_path / "web.parquet", "web", [f"doc {i % 7}" for i in range(20)])
    books = write_shard(tmp_path / "books.parquet", "books", [f"doc {i}" for i in range(3, 10)])
    # Order A: books first (as the asset graph orders it). Order B: web, then books, then web again.
    run(tmp_path / "a", [books], tmp_path / "a_books", "books", 2, 0)
    run(tmp_path / "a", [web], tmp_path / "a_web", "web", 0, 1)
    run(tmp_path / "b", [web], tmp_path / "b_web", "web", 0, 1)
    run(tmp_path / "b", [books], tmp_path / "b_books", "books", 2, 0)
    run(tmp_path / "b", [web], tmp_path / "b_web", "web", 0, 1)
    assert kept_ids(tmp_path / "a_web") == kept_ids(tmp_path / "b_web") == ["web-0", "web-1", "web-2"]
    assert kept_ids(tmp_path / "a_books") == kept_ids(tmp_path / "b_books")
    with ExactIndex(tmp_path / "a", 4) as a, ExactIndex(tmp_path / "b", 4) as b:
        assert a.dump() == b.dump()


def test_partition_count_is_fixed_once_the_index_exists(tmp_path):
    ExactIndex(tmp_path / "i", partitions=4).close()
    with pytest.raises(ValueError, match="built with 4 partitions"):
        ExactIndex(tmp_path / "i", partitions=8)


def test_partitions_spread_keys_and_parallel_workers_decide_the_same(tmp_path):
    texts = [f"text number {i % 300}" for i in range(1000)]
    shard = write_shard(tmp_path / "s.parquet", "s", texts)
    with ExactIndex(tmp_path / "one", partitions=1) as index:
        dedup_exact_indexed([shard], tmp_path / "o1", "s", index, batch_docs=128)
    with ExactIndex(tmp_path / "many", partitions=16, workers=4) as index:
        dedup_exact_indexed([shard], tmp_path / "o2", "s", index, batch_docs=128)
        per_bucket = index.stats()["per_bucket"]
    assert kept_ids(tmp_path / "o1") == kept_ids(tmp_path / "o2") == [f"s-{i}" for i in range(300)]
    assert len(per_bucket) == 16 and sum(per_bucket) == 300 and max(per_bucket) < 300 / 4


def test_in_memory_index_keeps_nothing(tmp_path):
    shard = write_shard(tmp_path / "s.parquet", "s", ["a", "a", "b"])
    with ExactIndex(None, partitions=2) as index:
        res = dedup_exact_indexed([shard], tmp_path / "o", "s", index)
    assert res.docs_out == 2
    assert not list(tmp_path.glob("*.sqlite"))


DRIVER = textwrap.dedent(
    """
    import sys
    from lm_platform.data.dedup.exact import dedup_exact_indexed
    from lm_platform.data.dedup.dedup_index import ExactIndex

    index_dir, out_dir, *shards = sys.argv[1:]

    def progress(shard, done):
        print(f"committed {shard} {done}", flush=True)

    with ExactIndex(index_dir, partitions=4) as index:
        dedup_exact_indexed(shards, out_dir, "web", index, priority=0, source_rank=1, batch_docs=400,
                            on_batch=progress)
    print("finished", flush=True)
    """
)


def _corpus(tmp_path: Path) -> list[Path]:
    """Two shards of 4000 documents holding 2500 distinct texts between them."""
    shards = []
    for s in range(2):
        texts = [f"the cat sat on the mat while birds sang, number {i % 2500}" for i in range(4000)]
        shards.append(write_shard(tmp_path / f"web{s}.parquet", "web", texts, start=s * 4000))
    return shards


def test_kill_during_indexing_leaves_a_consistent_index_and_a_rerun_matches(tmp_path):
    shards = _corpus(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [
        sys.executable,
        "-c",
        DRIVER,
        str(tmp_path / "killed"),
        str(tmp_path / "killed_out"),
        *map(str, shards),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    commits = 0
    deadline = time.monotonic() + 120
    while commits < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        commits += line.startswith("committed")
    assert commits == 3, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)  # mid-run: batches after the third are in flight or not started
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # Consistent: every bucket passes SQLite's integrity check and holds the keys of committed
    # transactions only (at most the three batches reported and the one in flight); no output appeared.
    buckets = sorted((tmp_path / "killed").glob("part-*.sqlite"))
    assert len(buckets) == 4
    keys = 0
    for b in buckets:
        with sqlite3.connect(b) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            keys += conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
    assert 1200 <= keys <= 1600
    assert not (tmp_path / "killed_out").exists()

    # The rerun finishes with exactly what an uninterrupted run produces.
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0 and "finished" in rerun.stdout, rerun.stderr
    clean = [
        sys.executable,
        "-c",
        DRIVER,
        str(tmp_path / "clean"),
        str(tmp_path / "clean_out"),
        *map(str, shards),
    ]
    assert subprocess.run(clean, capture_output=True, env=env, timeout=300).returncode == 0
    assert kept_ids(tmp_path / "killed_out") == kept_ids(tmp_path / "clean_out")
    assert len(kept_ids(tmp_path / "clean_out")) == 2500
    with ExactIndex(tmp_path / "killed", 4) as a, ExactIndex(tmp_path / "clean", 4) as b:
        assert a.dump() == b.dump()
        assert all(v == "ok" for v in a.integrity())


def test_a_recurated_source_releases_texts_it_no_longer_holds(tmp_path):
    idx = tmp_path / "index"
    books = write_shard(tmp_path / "books.parquet", "books", ["shared text", "old text", "other"])
    web = write_shard(tmp_path / "web.parquet", "web", ["shared text", "old text", "web only"])
    run(idx, [books], tmp_path / "books_out", "books", 2, 0)
    run(idx, [web], tmp_path / "web_out", "web", 0, 1)
    assert kept_ids(tmp_path / "web_out") == ["web-2"]
    # Curation changes: books no longer holds "old text", and "other" moved behind a new copy of itself.
    time.sleep(0.01)
    write_shard(tmp_path / "books.parquet", "books", ["shared text", "new", "other", "OTHER"])
    r = run(idx, [books], tmp_path / "books_out", "books", 2, 0)
    assert r.index_reset and kept_ids(tmp_path / "books_out") == ["books-0", "books-1", "books-2"]
    run(idx, [web], tmp_path / "web_out", "web", 0, 1)
    assert kept_ids(tmp_path / "web_out") == ["web-1", "web-2"]  # "old text" is the web's to keep now
    # Same state as an index built from scratch on the new input.
    run(tmp_path / "fresh", [books], tmp_path / "b2", "books", 2, 0)
    run(tmp_path / "fresh", [web], tmp_path / "w2", "web", 0, 1)
    with ExactIndex(idx, 4) as a, ExactIndex(tmp_path / "fresh", 4) as b:
        assert a.dump() == b.dump()
    # Indexing the unchanged source again is incremental: no reset.
    assert not run(idx, [books], tmp_path / "books_out", "books", 2, 0).index_reset
