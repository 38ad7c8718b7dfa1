"""The exact-dedup index's single-writer working copy: worked on locally, published atomically, never
half-published, and a concurrent publish is detected instead of lost."""

from __future__ import annotations

import pytest

from lm_platform.data.dedup.dedup_index import Entry, ExactIndex
from lm_platform.data.dedup.exact import dedup_key
from lm_platform.data.dedup.local_index import ConcurrentWriterError, local_working_copy


def _claim(directory, source: str, texts: list[str]):
    with ExactIndex(directory, 4, 1) as index:
        index.claim(source, 0, 0, 0, [Entry(dedup_key(t), i, f"{source}/{i}") for i, t in enumerate(texts)])
        return index.stats()


def test_work_on_a_local_copy_then_publish(tmp_path):
    shared = tmp_path / "volume" / "exact_index"
    scratch = tmp_path / "local"
    scratch.mkdir()
    with local_working_copy(shared, scratch) as local:
        assert str(local).startswith(str(scratch))
        _claim(local, "a", ["one", "two"])
        assert not shared.exists(), "nothing on the shared volume until done"
    with local_working_copy(shared, scratch) as local:
        stats = _claim(local, "b", ["three"])
    assert stats["keys"] == 3
    with ExactIndex(shared, 4, 1) as index:
        assert index.stats()["keys"] == 3
    assert list(scratch.iterdir()) == [], "the local copy is removed"


def test_a_failed_writer_leaves_the_shared_index_untouched(tmp_path):
    shared = tmp_path / "exact_index"
    with local_working_copy(shared) as local:
        _claim(local, "a", ["one"])
    with pytest.raises(RuntimeError, match="boom"), local_working_copy(shared) as local:
        _claim(local, "b", ["two", "three"])
        raise RuntimeError("boom")
    with ExactIndex(shared, 4, 1) as index:
        assert index.stats()["keys"] == 1


def test_concurrent_publish_is_detected(tmp_path):
    shared = tmp_path / "exact_index"
    with local_working_copy(shared) as local:
        _claim(local, "a", ["one"])
    with pytest.raises(ConcurrentWriterError), local_working_copy(shared) as first:
        _claim(first, "b", ["two"])
        with local_working_copy(shared) as second:  # a second writer publishes in between
            _claim(second, "c", ["three"])
    with ExactIndex(shared, 4, 1) as index:
        assert index.stats()["keys"] == 2, "the second writer's copy stands; the first did not overwrite it"
