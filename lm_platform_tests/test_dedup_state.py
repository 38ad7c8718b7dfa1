"""Dedup state that crosses runs: a killed run followed by new input, a change of source priority or
order, and a downstream-only rerun after one source changed. Each ends equal to a fresh run on the new
state (or, for the downstream-only rerun, refuses with a clear message until near_duplicates is rerun)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from lm_platform.data.corpus.documents import DocWriter, iter_docs, make_doc
from lm_platform.data.dedup.dedup_index import ExactIndex
from lm_platform.data.dedup.deduped import filter_deduped
from lm_platform.data.dedup.exact import dedup_exact_indexed, exact_shards
from lm_platform.data.dedup.near import minhash_signatures, near_dup_clusters, removed_rows
from lm_platform.data.dedup.staleness import StaleNearDuplicates
from lm_platform.recipe.schema import NearDupConfig

NEAR = NearDupConfig(bands=14, rows=8, threshold=0.8)


def write_source(root: Path, name: str, shards: list[list[str]]) -> list[Path]:
    """Curated shards of a source; a document's id comes from its text (stable across versions)."""
    paths = []
    for k, texts in enumerate(shards):
        path = root / "curated" / name / f"{k:05d}.parquet"
        paths.append(path)
        if path.exists() and [d["text"] for d in iter_docs(path)] == texts:
            continue  # unchanged shards keep their file (as curation leaves a shard it did not redo)
        with DocWriter(path) as w:
            for t in texts:
                w.write(
                    make_doc(f"{name}/{hashlib.sha1(t.encode()).hexdigest()[:10]}", t, name, "CC0-1.0", "en")
                )
    return paths


def keep_order(ranks: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(ranks, key=lambda s: (-ranks[s][0], ranks[s][1]))


def exact(root: Path, index_dir: Path, inputs: dict[str, list[Path]], ranks, sources=None, **kw) -> None:
    for name in sources or keep_order(ranks):
        with ExactIndex(index_dir, partitions=4) as index:
            dedup_exact_indexed(
                inputs[name],
                root / "exact" / name,
                name,
                index,
                *ranks[name],
                batch_docs=2,
                ranks=ranks,
                **kw,
            )


def near(root: Path, ranks, sources=None) -> None:
    for name in sources or ranks:
        minhash_signatures(exact_shards(root / "exact" / name), root / "minhash" / name, "en", NEAR)
    near_dup_clusters([(s, root / "minhash" / s) for s in keep_order(ranks)], root / "near", NEAR)


def deduped(root: Path, ranks, sources=None, with_near: bool = True) -> dict[str, list[str]]:
    out = {}
    for name in sources or ranks:
        filter_deduped(
            exact_shards(root / "exact" / name),
            root / "deduped" / f"{name}.parquet",
            name,
            "en",
            near_removed=removed_rows(root / "near", name) if with_near else None,
        )
        out[name] = [d["id"] for d in iter_docs(root / "deduped" / f"{name}.parquet")]
    return out


def index_state(index_dir: Path) -> list[tuple]:
    with ExactIndex(index_dir, partitions=4) as index:
        return index.dump()


def fresh(tmp_path: Path, shards: dict[str, list[list[str]]], ranks, with_near: bool = False):
    root = tmp_path / "fresh"
    inputs = {name: write_source(root, name, s) for name, s in shards.items()}
    exact(root, root / "index", inputs, ranks)
    if with_near:
        near(root, ranks)
    return deduped(root, ranks, with_near=with_near), index_state(root / "index")


class Killed(Exception):
    pass


def test_killed_mid_shard_then_new_input_leaves_no_stale_claims(tmp_path):
    """web is killed while indexing its second shard (its first batch, holding "shared story", is already
    claimed); that shard is then re-curated without the text. blog, lower priority, must keep its copy."""
    ranks = {"web": (1, 0), "blog": (0, 1)}
    root = tmp_path / "run"
    old = {
        "web": [["a one", "b two"], ["shared story", "c three", "d four", "e five"]],
        "blog": [["shared story", "f"]],
    }
    inputs = {name: write_source(root, name, s) for name, s in old.items()}

    def kill(shard: int, done: int) -> None:
        if shard == 1:
            raise Killed

    with pytest.raises(Killed):
        exact(root, root / "index", inputs, ranks, sources=["web"], on_batch=kill)
    new = {**old, "web": [["a one", "b two"], ["c three", "d four", "e five"]]}
    inputs = {name: write_source(root, name, s) for name, s in new.items()}
    exact(root, root / "index", inputs, ranks)
    got = deduped(root, ranks, with_near=False)
    want, want_index = fresh(tmp_path, new, ranks)
    assert got == want and any("blog/" in i for i in got["blog"]) and len(got["blog"]) == 2
    assert index_state(root / "index") == want_index


@pytest.mark.parametrize(
    "new_ranks",
    [{"web": (-1, 0), "blog": (0, 1)}, {"web": (0, 1), "blog": (0, 0)}],
    ids=["priority_lowered", "order_swapped"],
)
def test_change_of_priority_or_order_is_reranked(tmp_path, new_ranks):
    ranks = {"web": (0, 0), "blog": (0, 1)}
    shards = {"web": [["shared text", "web only"]], "blog": [["Shared text!", "blog only"]]}
    root = tmp_path / "run"
    inputs = {name: write_source(root, name, s) for name, s in shards.items()}
    exact(root, root / "index", inputs, ranks)
    assert deduped(root, ranks, with_near=False)["blog"] == [
        f"blog/{hashlib.sha1(b'blog only').hexdigest()[:10]}"
    ]
    exact(root, root / "index", inputs, new_ranks)  # the recipe changed: every source again, new keep order
    got = deduped(root, new_ranks, with_near=False)
    want, want_index = fresh(tmp_path, shards, new_ranks)
    assert got == want and len(got["blog"]) == 2 and len(got["web"]) == 1
    assert index_state(root / "index") == want_index


def test_source_that_leaves_the_recipe_releases_its_claims(tmp_path):
    ranks = {"web": (1, 0), "blog": (0, 1)}
    shards = {"web": [["shared text", "web only"]], "blog": [["shared text", "blog only"]]}
    root = tmp_path / "run"
    inputs = {name: write_source(root, name, s) for name, s in shards.items()}
    exact(root, root / "index", inputs, ranks)
    exact(root, root / "index", inputs, {"blog": (0, 0)})
    assert len(deduped(root, {"blog": (0, 0)}, with_near=False)["blog"]) == 2


def _doc(rng: random.Random, n: int = 150) -> list[str]:
    return rng.choices([f"w{i}" for i in range(3000)], k=n)


def test_downstream_only_rerun_after_a_source_changed_refuses_stale_near_duplicates(tmp_path):
    """blog changes (a document goes, so positions shift); rerunning exact_dedup/blog, minhash/blog and
    deduped/blog without near_duplicates must not remove the wrong documents: deduped/blog fails with a
    message naming near_duplicates; once it is rerun, the result equals a fresh run."""
    rng = random.Random(4)
    base = [_doc(rng) for _ in range(6)]
    close = list(base[3])
    close[10] = "changed"
    web = [" ".join(b) for b in base[:4]]
    blog_old = [" ".join(_doc(rng)), " ".join(close), " ".join(_doc(rng)), " ".join(_doc(rng))]
    ranks = {"web": (1, 0), "blog": (0, 1)}
    root = tmp_path / "run"
    old = {"web": [web], "blog": [blog_old]}
    inputs = {name: write_source(root, name, s) for name, s in old.items()}
    exact(root, root / "index", inputs, ranks)
    near(root, ranks)
    first = deduped(root, ranks)
    assert len(first["blog"]) == 3  # the near copy of web's document went
    new = {**old, "blog": [[blog_old[0], blog_old[2], " ".join(close), blog_old[3]]]}  # reordered, one more
    new["blog"][0].insert(0, " ".join(_doc(rng)))
    inputs = {name: write_source(root, name, s) for name, s in new.items()}
    exact(root, root / "index", inputs, ranks, sources=["blog"])
    for name in ["blog"]:
        minhash_signatures(exact_shards(root / "exact" / name), root / "minhash" / name, "en", NEAR)
    with pytest.raises(StaleNearDuplicates, match="near_duplicates is stale for 'blog'.*near_duplicates"):
        deduped(root, ranks, sources=["blog"])
    near(root, ranks, sources=[])
    got = deduped(root, ranks)
    want, want_index = fresh(tmp_path, new, ranks, with_near=True)
    assert got == want and len(got["blog"]) == 4
    assert index_state(root / "index") == want_index


def test_recipe_ranks_follow_priority_and_order(demo_recipe):
    from lm_platform.data.dedup.exact import recipe_ranks

    ranks = recipe_ranks(demo_recipe)
    assert list(ranks) == [s.name for s in demo_recipe.sources]
    assert all(ranks[s.name] == (s.priority, i) for i, s in enumerate(demo_recipe.sources))
