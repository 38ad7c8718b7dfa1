"""The storage interface and its commit protocol, on a local folder and on an S3 API server (moto on
127.0.0.1): an output exists only once its manifest is committed, readers refuse what no manifest lists,
a rerun cleans up what a killed write left, and the object store retries throttled requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm_platform.storage import LocalStore, Throttled, UncommittedError
from lm_platform.storage.base import manifest_key
from lm_platform.training.contract import TrainerLaunch
from lm_platform_tests.s3_fixtures import S3Server, s3_server  # noqa: F401  (a fixture)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    from lm_platform.storage.fsspec_store import FsspecStore, S3Options

    server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()
    return FsspecStore(
        f"s3://{bucket}/some/prefix",
        S3Options(endpoint_url=server.endpoint_url, addressing_style="path", concurrency=3),
    )


def _dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    d = tmp_path / "out"
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


def test_publish_commits_a_directory_and_reads_it_back(store, tmp_path):
    d = _dir(tmp_path, {"a.bin": b"0123456789", "sub/b.json": b"{}"})
    m = store.publish(d, "demo/tokenizer")
    assert m["kind"] == "dir" and set(m["files"]) == {"a.bin", "sub/b.json"}
    assert store.exists("demo/tokenizer") and store.exists("demo/tokenizer/a.bin")
    assert store.list("demo") == ["demo/tokenizer/a.bin", "demo/tokenizer/sub/b.json"]
    assert store.read_bytes("demo/tokenizer/a.bin") == b"0123456789"
    assert store.read_range("demo/tokenizer/a.bin", 3, 7) == b"3456"
    store.get("demo/tokenizer", tmp_path / "back")
    assert (tmp_path / "back" / "sub" / "b.json").read_bytes() == b"{}"
    assert store.url_of("demo/tokenizer").endswith("/demo/tokenizer")


def test_a_single_file_output(store, tmp_path):
    f = tmp_path / "x.json"
    f.write_text('{"a": 1}')
    store.publish(f, "demo/eval/x.json")
    assert store.read_bytes("demo/eval/x.json") == b'{"a": 1}'
    assert store.list("demo/eval") == ["demo/eval/x.json"]
    store.delete("demo/eval/x.json")
    assert not store.exists("demo/eval/x.json")
    with pytest.raises(UncommittedError):
        store.read_bytes("demo/eval/x.json")


def test_readers_refuse_objects_no_manifest_lists(store, tmp_path):
    # A write killed before its manifest: objects under the key, no commit.
    (tmp_path / "part").write_bytes(b"partial")
    store._put_file(tmp_path / "part", "demo/dataset/main/shard_0.npy")
    assert not store.exists("demo/dataset/main")
    assert store.list("demo") == []
    with pytest.raises(UncommittedError):
        store.read_bytes("demo/dataset/main/shard_0.npy")
    with pytest.raises(UncommittedError):
        store.get("demo/dataset/main", tmp_path / "got")
    # An object added beside a committed output is not part of it either.
    store.publish(_dir(tmp_path, {"index.json": b"[]"}), "demo/dataset/anneal")
    store._put_file(tmp_path / "part", "demo/dataset/anneal/extra.npy")
    assert store.list("demo/dataset") == ["demo/dataset/anneal/index.json"]
    with pytest.raises(UncommittedError):
        store.read_range("demo/dataset/anneal/extra.npy", 0, 3)


def test_republishing_uncommits_first_and_cleans_up_stale_objects(store, tmp_path):
    store.publish(_dir(tmp_path, {"old.npy": b"old", "keep.npy": b"k1"}), "demo/dataset/main")
    # A rerun whose upload dies midway: the old manifest is gone before any object changed.
    failing = tmp_path / "new"
    failing.mkdir()
    (failing / "keep.npy").write_bytes(b"k2")
    original = store._put_file

    def dies(local, key):
        raise KeyboardInterrupt("killed during upload")

    store._put_file = dies
    with pytest.raises(KeyboardInterrupt):
        store.publish(failing, "demo/dataset/main")
    store._put_file = original
    assert store.manifest("demo/dataset/main") is None
    assert not store.exists("demo/dataset/main/keep.npy")
    # The rerun completes: only the new output's objects remain, and they are committed.
    store.publish(failing, "demo/dataset/main")
    assert store.list("demo/dataset/main") == ["demo/dataset/main/keep.npy"]
    assert sorted(store._list("demo/dataset/main")) == ["demo/dataset/main/keep.npy"]
    assert store.read_bytes("demo/dataset/main/keep.npy") == b"k2"


def test_sweep_deletes_uncommitted_leftovers_only(store, tmp_path):
    store.publish(_dir(tmp_path, {"a.npy": b"a"}), "demo/tokens/en")
    (tmp_path / "junk").write_bytes(b"junk")
    store._put_file(tmp_path / "junk", "demo/tokens/vi/part.npy")
    assert store.sweep("demo", older_than_s=3600)[0] == []  # too recent: maybe a write still running
    deleted, _ = store.sweep("demo", older_than_s=0)
    assert deleted == ["demo/tokens/vi/part.npy"]
    assert store.list("demo") == ["demo/tokens/en/a.npy"]


def test_a_nested_output_replaces_its_part_of_a_directory_output(store, tmp_path):
    store.publish(_dir(tmp_path, {"exact/index.sqlite": b"v1", "near/x": b"n"}), "demo/dedup")
    f = tmp_path / "v2"
    f.mkdir()
    (f / "index.sqlite").write_bytes(b"v2")
    store.publish(f, "demo/dedup/exact")
    assert store.read_bytes("demo/dedup/exact/index.sqlite") == b"v2"
    assert store.manifest("demo/dedup")["files"] == {
        "near/x": store.manifest("demo/dedup")["files"]["near/x"]
    }
    assert store.list("demo/dedup") == ["demo/dedup/exact/index.sqlite", "demo/dedup/near/x"]


def test_throttled_requests_are_retried_with_backoff(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.backoff_s = 0.001
    calls = []
    original = store._put_bytes

    def slow_down(data, key):
        calls.append(key)
        if len(calls) <= 2:
            raise Throttled("SlowDown: Please reduce your request rate.")
        original(data, key)

    store._put_bytes = slow_down
    store.publish(_dir(tmp_path, {"a": b"1"}), "demo/x")
    assert store.read_bytes("demo/x/a") == b"1" and len(calls) == 3
    store._put_bytes = lambda data, key: (_ for _ in ()).throw(Throttled("SlowDown"))
    with pytest.raises(Throttled):
        store.publish(_dir(tmp_path, {"a": b"2"}), "demo/y")


def test_s3_store_aborts_incomplete_multipart_uploads_and_keeps_credentials_out(
    s3_server: S3Server,  # noqa: F811
    tmp_path,
):
    from lm_platform.storage.fsspec_store import FsspecStore, S3Options

    bucket = s3_server.new_bucket()
    store = FsspecStore(
        f"s3://{bucket}/p", S3Options(endpoint_url=s3_server.endpoint_url, addressing_style="path")
    )
    client = s3_server.client()
    client.create_multipart_upload(Bucket=bucket, Key="p/demo/checkpoint/main/model.safetensors")
    client.create_multipart_upload(Bucket=bucket, Key="other/x")
    # (moto reports a fixed 2010 start time for every upload, so the age bound is not exercised here.)
    assert store.sweep("demo", older_than_s=0)[1] == 1
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["other/x"]
    # Credentials come from the environment; none is in what the store shows or commits.
    store.publish(_dir(tmp_path, {"a": b"1"}), "demo/x")
    shown = repr(store) + json.dumps(store.manifest("demo/x")) + store.url_of("demo/x")
    assert "testing-secret-never-logged" not in shown and "testing" not in shown.replace("lm-test", "")
    assert store.fs.key is None and store.fs.secret is None


def test_manifest_lives_under_commits(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.publish(_dir(tmp_path, {"a": b"1"}), "demo/x")
    assert (tmp_path / "store" / manifest_key("demo/x")).is_file()


def test_cache_publishes_atomic_writes_and_fills_an_empty_cache(tmp_path):
    from lm_platform.atomic import atomic_dir, write_json
    from lm_platform.storage import cache as store_cache
    from lm_platform.storage.cache import LocalCache

    store = LocalStore(tmp_path / "store")
    first = LocalCache(store, tmp_path / "cache1")
    store_cache.activate(first)
    try:
        with atomic_dir(first.root / "demo" / "tokenizer") as tmp:
            (tmp / "tokenizer.json").write_text("{}")
        write_json(first.root / "demo" / "eval" / "x.json", {"score": 1})
        write_json(tmp_path / "elsewhere.json", {})  # outside the cache: not published
        assert store_cache.object_url(first.root / "demo" / "tokenizer") == f"{store.url}/demo/tokenizer"
    finally:
        store_cache.activate(None)
    assert store.list("demo") == ["demo/eval/x.json", "demo/tokenizer/tokenizer.json"]
    # A second machine with an empty cache: filled from the store on demand.
    second = LocalCache(store, tmp_path / "cache2")
    second.fill(second.root / "demo" / "tokenizer")
    assert (second.root / "demo" / "tokenizer" / "tokenizer.json").read_text() == "{}"
    assert not (second.root / "demo" / "eval").exists()
    second.fill(second.root / "demo")
    assert json.loads((second.root / "demo" / "eval" / "x.json").read_text()) == {"score": 1}


def test_cache_evicts_published_outputs_above_its_bound(tmp_path):
    from lm_platform.storage.cache import LocalCache

    store = LocalStore(tmp_path / "store")
    for name in ("a", "b", "c"):
        store.publish(_dir(tmp_path / name, {"w.bin": name.encode() * 1000}), f"demo/checkpoint/{name}")
    cache = LocalCache(store, tmp_path / "cache", max_bytes=2500, grace_s=0)
    for name in ("a", "b", "c"):
        cache.fill(cache.root / "demo" / "checkpoint" / name)
        cache._pinned.clear()  # a later step of the process: earlier outputs may go
    assert cache.size() <= 2500 and cache.peak() <= 2500
    assert (cache.root / "demo/checkpoint/c/w.bin").exists()
    assert not (cache.root / "demo/checkpoint/a").exists()
    cache.fill(cache.root / "demo" / "checkpoint" / "a")  # evicted, still in the store: filled again
    assert (cache.root / "demo/checkpoint/a/w.bin").read_bytes() == b"a" * 1000


def test_layout_under_an_s3_root_fills_from_the_store(s3_server: S3Server, tmp_path, monkeypatch):  # noqa: F811
    from lm_platform.storage import cache as store_cache
    from lm_platform.storage.layout import StoreLayout, layout_for

    bucket = s3_server.new_bucket()
    url = f"s3://{bucket}/team/lm"
    for k, v in s3_server.env(url).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LM_PLATFORM_CACHE", str(tmp_path / "cache"))
    try:
        layout = layout_for(url, "demo")
        assert isinstance(layout, StoreLayout) and layout.root == tmp_path / "cache"
        from lm_platform.atomic import write_json

        write_json(layout.eval_result("mc", "v1"), {"score": 0.5})
        assert store_cache.active().store.read_bytes("demo/eval/mc/v1.json")
        assert layout.url(layout.eval_result("mc", "v1")) == f"{url}/demo/eval/mc/v1.json"
        # Another pod: an empty cache, the same store.
        monkeypatch.setenv("LM_PLATFORM_CACHE", str(tmp_path / "cache2"))
        store_cache.activate(None)
        store_cache._FROM_ENV = None
        other = layout_for(url, "demo")
        assert json.loads(other.eval_result("mc", "v1").read_text()) == {"score": 0.5}
    finally:
        store_cache.activate(None)
        store_cache._FROM_ENV = None


def test_k8s_profile_with_an_s3_root_gives_pods_a_cache_and_credentials_by_reference():
    from lm_platform.deployment.pods import trainer_pod_spec
    from lm_platform.deployment.profile import ProfileError, parse_profile
    from lm_platform.recipe import load_recipe

    raw = {
        "kind": "k8s",
        "image": "lm:1",
        "storage": {
            "url": "s3://team-bucket/lm",
            "endpoint_url": "https://minio.internal",
            "addressing_style": "path",
            "credentials_secret": "lm-s3",
            "cache_size": "20Gi",
        },
    }
    profile = parse_profile(raw)
    assert profile.storage_root() == "s3://team-bucket/lm"
    recipe = load_recipe("demo")
    spec = trainer_pod_spec(
        profile, recipe, TrainerLaunch("/cache/lm_platform/demo/x.job.json", 1, recipe.stages[0].name)
    )
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["LM_PLATFORM_STORAGE"]["value"] == "s3://team-bucket/lm"
    assert env["LM_PLATFORM_S3_ENDPOINT_URL"]["value"] == "https://minio.internal"
    assert env["LM_PLATFORM_S3_ADDRESSING_STYLE"]["value"] == "path"
    assert int(env["LM_PLATFORM_CACHE_MAX_BYTES"]["value"]) == 20 * 2**30 * 9 // 10
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "lm-s3", "key": key}}}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/cache/lm_platform"]]["emptyDir"] == {"sizeLimit": "20Gi"}
    assert not any("persistentVolumeClaim" in v for v in spec["volumes"])
    # Without a Secret: the service account's role; never a plain credential.
    del raw["storage"]["credentials_secret"]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(
        trainer_pod_spec(parse_profile(raw), recipe, TrainerLaunch("/j", 1, "main"))
    )
    for bad, message in (
        ({"url": "s3://b/p", "pvc": "data"}, "either pvc"),
        ({"url": "gs://b/p"}, "is not an s3://bucket/prefix URL"),
        ({"url": "s3://b/p", "cache_size": "20 GB"}, "storage.cache_size"),
    ):
        with pytest.raises(ProfileError, match=message):
            parse_profile({**raw, "storage": bad})


def test_metadata_shows_object_urls_under_an_object_store(tmp_path):
    import dagster as dg

    from lm_platform.defs.metadata import value
    from lm_platform.storage import cache as store_cache
    from lm_platform.storage.cache import LocalCache

    cache = LocalCache(LocalStore(tmp_path / "store"), tmp_path / "cache")
    assert value(cache.root / "demo" / "tokenizer") == dg.MetadataValue.path(
        str(cache.root / "demo/tokenizer")
    )
    store_cache.activate(cache)
    try:
        shown = value(cache.root / "demo" / "tokenizer")
        assert shown == dg.MetadataValue.url(f"{tmp_path / 'store'}/demo/tokenizer")
        assert value(tmp_path / "elsewhere") == dg.MetadataValue.path(str(tmp_path / "elsewhere"))
    finally:
        store_cache.activate(None)


def test_fill_hard_links_content_the_cache_already_holds(tmp_path):
    from lm_platform.storage.cache import LocalCache

    store = LocalStore(tmp_path / "store")
    store.publish(_dir(tmp_path / "a", {"model.safetensors": b"w" * 500}), "demo/checkpoint/main.run/step_5")
    store.publish(_dir(tmp_path / "b", {"model.safetensors": b"w" * 500, "x": b"1"}), "demo/checkpoint/main")
    transferred = []
    original = store._get_file
    store._get_file = lambda key, local: (transferred.append(key), original(key, local))
    cache = LocalCache(store, tmp_path / "cache")
    cache.fill(cache.root / "demo" / "checkpoint")
    step = cache.root / "demo/checkpoint/main.run/step_5/model.safetensors"
    export = cache.root / "demo/checkpoint/main/model.safetensors"
    assert export.read_bytes() == b"w" * 500 and export.stat().st_ino == step.stat().st_ino
    # One of the two equal weight files was transferred, the other linked to it.
    assert len(transferred) == 2 and "demo/checkpoint/main/x" in transferred


def test_released_step_checkpoints_make_room_and_pruning_reaches_the_store(tmp_path):
    """The trainer releases its earlier step checkpoints before it writes the next one (they are in the
    store): the cache evicts them to make room, and pruning still deletes the evicted ones from the store
    and still sees the kept ones."""
    from lm_platform.atomic import atomic_dir
    from lm_platform.storage import cache as store_cache
    from lm_platform.storage.cache import LocalCache
    from lm_platform.training import checkpoint as ckpt

    store = LocalStore(tmp_path / "store")
    cache = LocalCache(store, tmp_path / "cache", max_bytes=2500, grace_s=0)
    run_dir = cache.root / "demo" / "checkpoint" / "main.run"
    store_cache.activate(cache)
    try:
        for step in (5, 10, 15):
            older = [p for _, p in ckpt.step_dirs(run_dir)]
            store_cache.release_paths(*older, room=1000)
            with atomic_dir(run_dir / f"step_{step:08d}") as tmp:
                (tmp / ckpt.STATE_FILE).write_text("{}")
                (tmp / "model.safetensors").write_bytes(bytes([step]) * 1000)
            if step == 5:
                ckpt.mark_kept(run_dir, 5)
            assert cache.size() <= 2500
            ckpt.prune(run_dir, keep_last=1)
        # Only the newest step checkpoint is on the local disk; the store has it and the kept one.
        assert [s for s, _ in ckpt.step_dirs(run_dir)] == [15]
        assert [s for s, _ in ckpt.stored_step_dirs(run_dir)] == [5, 15]
        assert ckpt.kept_steps(run_dir) == [5]
        assert store.manifest("demo/checkpoint/main.run/step_00000010") is None
        # A fill brings an evicted one back.
        cache.fill(run_dir / "step_00000005")
        assert (run_dir / "step_00000005" / "model.safetensors").read_bytes() == bytes([5]) * 1000
    finally:
        store_cache.activate(None)
    # Without a store the same calls change nothing: released paths stay, pruning sees the disk only.
    local = tmp_path / "local" / "main.run"
    for step in (5, 10):
        store_cache.release_paths(*(p for _, p in ckpt.step_dirs(local)), room=10**9)
        with atomic_dir(local / f"step_{step:08d}") as tmp:
            (tmp / ckpt.STATE_FILE).write_text("{}")
    assert [s for s, _ in ckpt.stored_step_dirs(local)] == [5, 10]
    ckpt.prune(local, keep_last=1)
    assert [s for s, _ in ckpt.step_dirs(local)] == [10]


def test_fill_makes_room_before_it_downloads(tmp_path):
    from lm_platform.storage.cache import LocalCache

    class Watched(LocalStore):
        def get(self, key, local, have=None):
            m = self.manifest(key)
            incoming = sum(f["size"] for f in m["files"].values())
            assert cache.size() + incoming <= cache.max_bytes, f"{key}: no room made before the download"
            return super().get(key, local, have)

    store = Watched(tmp_path / "store")
    for name in ("a", "b", "c"):
        store.publish(_dir(tmp_path / name, {"w.bin": name.encode() * 1000}), f"demo/checkpoint/{name}")
    cache = LocalCache(store, tmp_path / "cache", max_bytes=2500, grace_s=0)
    for name in ("a", "b", "c"):
        cache.fill(cache.root / "demo" / "checkpoint" / name)
        cache._pinned.clear()
    assert (cache.root / "demo/checkpoint/c/w.bin").exists() and cache.size() <= 2500
