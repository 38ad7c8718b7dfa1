"""The trimmed demo (as in test_reproducible_runs.py) with an s3:// storage root on a local S3 API server.

One run on a local folder and one chain of runs on the object store go side by side. The chain is killed
(SIGKILL, the whole process group) during a curation step, run again and killed after the first step
checkpoint of `checkpoint/main` reached the store (while the next one uploads, when the poll catches it),
then run again on an EMPTY local cache (a replacement pod):
after each kill no committed manifest points at partial data and readers refuse what no manifest lists; the
last run completes, its trainer resumes from the store's step checkpoint, and the tokenizer, token shards,
dataset shards, packed datasets and stage exports in the store are byte-identical to the local folder's.
"""

from __future__ import annotations

import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lm_platform.storage import LocalCache, UncommittedError
from lm_platform.storage.fsspec_store import FsspecStore, S3Options
from lm_platform_tests.conftest import isolated_env, write_demo_variant
from lm_platform_tests.s3_fixtures import S3Server, s3_server  # noqa: F401  (a fixture)
from lm_platform_tests.test_reproducible_runs import STAGES, _materialize, _run, _variant

pytestmark = pytest.mark.slow


def _artifacts(base: Path) -> dict[str, str]:
    files = [base / "tokenizer" / "tokenizer.json"]
    files += sorted((base / "tokens").rglob("*.npy")) + sorted((base / "deduped").glob("*.parquet"))
    for stage in STAGES:
        files += [base / "blend" / stage / "documents.parquet", base / "blend" / stage / "manifest.json"]
        files += sorted((base / "dataset" / stage).glob("*.npy")) + [base / "dataset" / stage / "index.json"]
        files.append(base / "checkpoint" / stage / "model.safetensors")
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _check_store(store: FsspecStore) -> int:
    """Every committed manifest's objects are whole (size and SHA-256); every object no manifest lists is
    refused by readers. Returns how many such uncommitted objects there were."""
    listed = set()
    for key, m in store.manifests().items():
        for rel, meta in m["files"].items():
            obj = f"{key}/{rel}" if rel else key
            listed.add(obj)
            data = store._get_bytes(obj)
            assert len(data) == meta["size"] and hashlib.sha256(data).hexdigest() == meta["sha256"], obj
    stray = [k for k in store._list("") if not k.startswith("_commits/") and k not in listed]
    for obj in stray:
        with pytest.raises(UncommittedError):
            store.read_bytes(obj)
    return len(stray)


def _store_run(root: Path, recipe: Path, server: S3Server) -> tuple[Path, list[str]]:
    bucket = server.new_bucket()
    url = f"s3://{bucket}/lm/prod"
    store = FsspecStore(url, S3Options(endpoint_url=server.endpoint_url, addressing_style="path"))
    cache = root / "s3" / "cache"
    env = isolated_env(root / "s3" / "home", root / "s3" / "unused")
    env.update(server.env(url), LM_PLATFORM_RECIPE=str(recipe), LM_PLATFORM_CACHE=str(cache))
    env.update(TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    events = []

    def curating(lines: list[str]) -> bool:
        return any("curated" in line and "STEP_START" in line for line in list(lines))

    assert _materialize(env, curating), "the run ended before a curation step"
    events.append(f"killed during curation: {_check_store(store)} uncommitted objects refused")

    def second_step_checkpoint(lines: list[str]) -> bool:
        # Local looks, no request. Once one step checkpoint is committed (its marker is written after the
        # store committed it): the next one in place in the cache without a marker is being uploaded
        # (killing then leaves objects without a manifest), or else the next one is committed too.
        markers = cache / ".lm-cache" / "entries" / "demo" / "checkpoint" / "main.run"
        committed = {p.name[: -len(".json")] for p in markers.glob("step_*.json")}
        steps = {p.name for p in (cache / "demo" / "checkpoint" / "main.run").glob("step_*")}
        return bool(committed) and (bool(steps - committed) or len(committed) >= 2)

    assert _materialize(env, second_step_checkpoint), "the run ended before the second step checkpoint"
    events.append(f"killed during training: {_check_store(store)} uncommitted objects refused")
    assert store.manifest("demo/checkpoint/main") is None
    # A replacement pod: nothing on the local disk.
    shutil.rmtree(cache)
    lines: list[str] = []
    _materialize_logged(env, lines)
    assert any("resumed from step_" in line for line in lines), "the trainer did not resume from the store"
    _check_store(store)
    store.sweep("", older_than_s=0)
    assert _check_store(store) == 0
    # What the store holds, read back through a fresh cache.
    fresh = LocalCache(store, root / "s3" / "readback")
    fresh.fill(fresh.root / "demo")
    return fresh.root / "demo", events


def _materialize_logged(env: dict[str, str], lines: list[str]) -> None:
    def keep(seen: list[str]) -> bool:
        lines[:] = list(seen)
        return False

    _materialize(env, keep)


def test_trimmed_demo_on_s3_matches_local_and_survives_kills(tmp_path, s3_server):  # noqa: F811
    recipe = write_demo_variant(tmp_path, _variant("extend", "trimmed"), "trimmed_extend.yaml")
    with ThreadPoolExecutor(2) as pool:
        local = pool.submit(_run, tmp_path, recipe, "local")
        on_s3 = pool.submit(_store_run, tmp_path, recipe, s3_server)
        local_base = local.result()
        s3_base, events = on_s3.result()
    print("\n".join(events))
    expected = _artifacts(local_base)
    assert len(expected) > 10
    assert _artifacts(s3_base) == expected
    for stage in ("main", "anneal"):
        run = Path("checkpoint") / f"{stage}.run"
        # Pruning reached the store (also step checkpoints the cache had evicted); the log is published.
        steps = [sorted(p.name for p in (b / run).glob("step_*")) for b in (local_base, s3_base)]
        assert steps[0] == steps[1], f"{run}: local {steps[0]}, store {steps[1]}"
        assert (s3_base / run / "log.jsonl").is_file(), f"{run}/log.jsonl is not in the store"
