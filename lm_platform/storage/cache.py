"""The local cache of an object store: what must be a local file stays one, bounded in size.

SQLite indexes, memory-mapped token shards, KenLM and tokenizer training inputs, model directories for
`from_pretrained`, PEFT and mergekit, and the checkpoint export's hard links all need local files. Under an
object-store root, the platform works on a local folder that mirrors the store's keys (`<cache>/<key>`):

- **fill**: before a step reads an output, the committed outputs at, above or under its location are
  copied from the store (checked against their manifests); a copy already there and still current (its
  marker holds the manifest's digest) is not transferred again.
- **publish**: every atomic write under the cache (`lm_platform.atomic`) is published to the store once it
  is in place locally (write-then-commit: `Store.publish`), so a pod that dies loses nothing committed.
- **bound**: after each fill or publish, outputs that are in the store are evicted, least recently used
  first, until the cache is under `max_bytes`; an output the current step filled or wrote, or any process
  used in the last `grace_s` seconds, stays (a step's own working set is never evicted under it). So the
  cache holds at most the bound or the running step's working set, whichever is larger, plus what that
  step is writing before it is published.
- **release**: a step shrinks its working set by unpinning what it is done with (`release_paths`: the
  trainer's loaded init, its earlier step checkpoints) and makes room before a large write (`room`), so
  what it writes fits under the bound too; a fill makes room before it downloads.

Which store and which cache a process uses comes from the environment (`LM_PLATFORM_STORAGE=s3://...`,
`LM_PLATFORM_CACHE`, `LM_PLATFORM_CACHE_MAX_BYTES`, `LM_PLATFORM_S3_ENDPOINT_URL`,
`LM_PLATFORM_S3_ADDRESSING_STYLE`), so the trainer's process and a step pod find the same store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lm_platform import atomic
from lm_platform.paths import STORAGE_ENV
from lm_platform.storage.base import Store, UncommittedError
from lm_platform.storage.fsspec_store import FsspecStore, S3Options

STATE_DIR = ".lm-cache"
CACHE_ENV = "LM_PLATFORM_CACHE"
CACHE_MAX_ENV = "LM_PLATFORM_CACHE_MAX_BYTES"
CACHE_GRACE_ENV = "LM_PLATFORM_CACHE_GRACE_S"
DEFAULT_MAX_BYTES = 50 * 2**30


def _digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


class LocalCache:
    """A local folder mirroring `store`'s keys, filled from it and published to it, under `max_bytes`."""

    def __init__(
        self, store: Store, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, grace_s: float = 60.0
    ):
        self.store = store
        self.root = Path(root).expanduser().resolve()
        self.max_bytes = max_bytes
        self.grace_s = grace_s
        self.state = self.root / STATE_DIR
        self.state.mkdir(parents=True, exist_ok=True)
        self._pinned: set[str] = set()
        self._pin_mutex = threading.Lock()
        # Threads of this process, then processes (flock): one fills or evicts at a time.
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalCache({self.store!r}, root={str(self.root)!r}, max_bytes={self.max_bytes})"

    def new_step(self) -> None:
        """A new step starts in this process (the in-process executor runs them one after another): what
        the previous steps filled or wrote may be evicted once it is older than the grace period."""
        with self._pin_mutex:
            self._pinned.clear()

    # ---- keys and markers ----------------------------------------------------------------------------
    def key_of(self, path: str | Path) -> str | None:
        """The store key of a path under the cache, or None (outside it, or a temporary/working name)."""
        path = Path(path).absolute()
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        parts = rel.parts
        if not parts or parts[0] == STATE_DIR or any(p.startswith(".tmp-") for p in parts):
            return None
        return rel.as_posix()

    def path_of(self, key: str) -> Path:
        return self.root / key

    def url_of(self, path: str | Path) -> str:
        """The object URL of a path under the cache (what asset metadata shows), else the path."""
        key = self.key_of(path)
        return self.store.url_of(key) if key is not None else str(path)

    def _marker(self, key: str) -> Path:
        return self.state / "entries" / f"{key}.json"

    def _read_marker(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._marker(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _write_marker(self, key: str, manifest: dict[str, Any], tag: str | None) -> None:
        marker = self._marker(key)
        marker.parent.mkdir(parents=True, exist_ok=True)
        size = sum(f["size"] for f in manifest["files"].values())
        tmp = marker.with_name(f".tmp-{marker.name}-{uuid.uuid4().hex[:8]}")
        files = {rel: f["sha256"] for rel, f in manifest["files"].items()}
        tmp.write_text(json.dumps({"digest": _digest(manifest), "tag": tag, "size": size, "files": files}))
        os.replace(tmp, marker)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with self._mutex, open(self.state / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- fill ----------------------------------------------------------------------------------------
    def fill(self, path: str | Path) -> Path:
        """Make the committed outputs at, under or above `path` local and current; returns `path`. One
        listing of the store; a manifest is read only where the copy's marker holds another tag."""
        path = Path(path)
        key = self.key_of(path)
        if key is None:
            return path
        index = self.store.manifest_index(key)
        # One process fills at a time (the others then find the copy current).
        with self._lock():
            for k, tag in index.items():
                self._fill_entry(k, tag)
        self._enforce()
        return path

    def _fill_entry(self, key: str, tag: str) -> None:
        local = self.path_of(key)
        with self._pin_mutex:
            self._pinned.add(key)
        marker = self._read_marker(key)
        if marker is not None and marker.get("tag") == tag and local.exists():
            os.utime(self._marker(key))
            return
        manifest = self.store.manifest(key)
        if manifest is None:  # uncommitted since the listing
            return
        if marker is not None and marker["digest"] == _digest(manifest) and local.exists():
            self._write_marker(key, manifest, tag)
            return
        # Room first (the lock is held): what is fetched fits under the bound too.
        self._evict(sum(f["size"] for f in manifest["files"].values()))
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".tmp-{local.name}-{uuid.uuid4().hex[:8]}")
        try:
            got = self.store.get(key, tmp, have=self._local_files())
            if got != manifest:
                raise UncommittedError(f"{self.store.url_of(key)} changed while it was read")
            old = None
            if local.exists():
                old = local.with_name(f".tmp-{local.name}-old-{uuid.uuid4().hex[:8]}")
                os.replace(local, old)
            os.replace(tmp, local)
            if old is not None:
                _remove(old)
        finally:
            if tmp.exists():
                _remove(tmp)
        self._write_marker(key, manifest, tag)

    def _local_files(self) -> dict[str, Path]:
        """The cache's committed files by SHA-256 (from the markers), for hard links instead of transfers."""
        out: dict[str, Path] = {}
        entries = self.state / "entries"
        for m in entries.rglob("*.json") if entries.is_dir() else []:
            key = m.relative_to(entries).as_posix()[: -len(".json")]
            marker = self._read_marker(key) or {}
            for rel, sha in (marker.get("files") or {}).items():
                out.setdefault(sha, self.path_of(key) / rel if rel else self.path_of(key))
        return out

    # ---- publish -------------------------------------------------------------------------------------
    def publish(self, path: str | Path) -> dict[str, Any] | None:
        """Publish the file or directory `path` (just put in place under the cache) to the store."""
        path = Path(path)
        key = self.key_of(path)
        if key is None or not path.exists():
            return None
        manifest = self.store.publish(path, key)
        with self._pin_mutex:
            self._pinned.add(key)
        # Markers of outputs nested in a directory output are superseded by it.
        if path.is_dir():
            shutil.rmtree(self.state / "entries" / key, ignore_errors=True)
        self._write_marker(key, manifest, self.store.manifest_tag(key))
        self._enforce()
        return manifest

    def forget(self, path: str | Path) -> None:
        """`path` was deleted locally on purpose (a pruned step checkpoint): delete it from the store too."""
        key = self.key_of(path)
        if key is None:
            return
        self.store.delete(key)
        self._marker(key).unlink(missing_ok=True)
        shutil.rmtree(self.state / "entries" / key, ignore_errors=True)

    def release(self, path: str | Path) -> None:
        """The running step no longer needs its local copy of `path` (an output it filled or wrote, in the
        store): from now on the cache may evict it like any other output (a fill brings it back)."""
        key = self.key_of(path)
        if key is not None:
            with self._pin_mutex:
                self._pinned = {k for k in self._pinned if k != key and not k.startswith(key + "/")}

    def make_room(self, room: int) -> None:
        """Evict (unpinned, published outputs, least recently used first) until `room` more bytes fit under
        the bound: what the running step is about to write."""
        self._enforce(room)

    def committed_names(self, path: str | Path) -> list[str]:
        """The names directly under folder `path` that committed outputs in the store lie under (whether
        or not the cache holds them now)."""
        key = self.key_of(path)
        if key is None:
            return []
        names = {
            k[len(key) + 1 :].split("/")[0] for k in self.store.manifest_index(key) if k.startswith(key + "/")
        }
        return sorted(names)

    def is_committed(self, path: str | Path) -> bool:
        """`path` is a committed output in the store, or a file of one."""
        key = self.key_of(path)
        return key is not None and self.store.exists(key)

    # ---- size bound ----------------------------------------------------------------------------------
    def size(self) -> int:
        """Bytes of files under the cache (each hard-linked file counted once), markers excluded."""
        seen: set[tuple[int, int]] = set()
        total = 0
        for dirpath, dirnames, names in os.walk(self.root):
            if Path(dirpath) == self.root and STATE_DIR in dirnames:
                dirnames.remove(STATE_DIR)
            for name in names:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        return total

    def peak(self) -> int:
        try:
            return int((self.state / "peak").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def _enforce(self, room: int = 0) -> None:
        """Evict unpinned published outputs, least recently used first, until the cache plus `room` bytes
        is under the bound (or nothing evictable is left); records the peak size."""
        with self._lock():
            self._evict(room)

    def _evict(self, room: int = 0) -> None:
        """`_enforce` with the lock held."""
        size = self.size()
        if size + room > self.max_bytes:
            now = time.time()
            markers = []
            entries = self.state / "entries"
            for m in entries.rglob("*.json") if entries.is_dir() else []:
                key = m.relative_to(entries).as_posix()[: -len(".json")]
                age = now - m.stat().st_mtime
                if key not in self._pinned and age >= self.grace_s:
                    markers.append((m.stat().st_mtime, key, m))
            for _, key, m in sorted(markers):
                if size + room <= self.max_bytes:
                    break
                _remove(self.path_of(key))
                m.unlink(missing_ok=True)
                size = self.size()
        if size > self.peak():
            (self.state / "peak").write_text(str(size))


_ACTIVE: LocalCache | None = None
_FROM_ENV: tuple[str, LocalCache | None] | None = None


def activate(cache: LocalCache | None) -> None:
    """Make `cache` the one atomic writes publish through in this process (None: back to the environment)."""
    global _ACTIVE
    _ACTIVE = cache


def is_object_url(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def cache_from_env() -> LocalCache | None:
    """The cache of `$LM_PLATFORM_STORAGE` when it is an object store URL, else None (one per process)."""
    global _FROM_ENV
    url = os.environ.get(STORAGE_ENV, "")
    if _FROM_ENV is not None and _FROM_ENV[0] == url:
        return _FROM_ENV[1]
    cache = open_cache(url) if is_object_url(url) else None
    _FROM_ENV = (url, cache)
    return cache


def active() -> LocalCache | None:
    return _ACTIVE if _ACTIVE is not None else cache_from_env()


def open_cache(url: str, cache_dir: str | Path | None = None, max_bytes: int | None = None) -> LocalCache:
    """The store at `url` (s3://bucket/prefix) with its local cache; settings from the environment."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r}: only s3:// object stores are supported (or a local folder)")
    opts = S3Options(
        endpoint_url=os.environ.get("LM_PLATFORM_S3_ENDPOINT_URL") or None,
        addressing_style=os.environ.get("LM_PLATFORM_S3_ADDRESSING_STYLE", "auto"),
        region=os.environ.get("LM_PLATFORM_S3_REGION") or None,
        concurrency=int(os.environ.get("LM_PLATFORM_S3_CONCURRENCY", "8")),
    )
    store = FsspecStore(url, opts)
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or (
            Path.home() / ".cache" / "lm_platform" / "store" / hashlib.sha256(url.encode()).hexdigest()[:16]
        )
    if max_bytes is None:
        max_bytes = int(os.environ.get(CACHE_MAX_ENV, DEFAULT_MAX_BYTES))
    return LocalCache(store, cache_dir, max_bytes, float(os.environ.get(CACHE_GRACE_ENV, "60")))


def object_url(path: str | Path) -> str | None:
    """The object URL of a path in the active store's cache, else None (a local root)."""
    cache = active()
    if cache is None or cache.key_of(path) is None:
        return None
    return cache.url_of(path)


def fill_paths(*paths: str | Path | None) -> None:
    """Under an object-store root, make the committed outputs at these paths local (a process that starts on
    an empty disk, like the trainer's pod, calls it for its inputs and step checkpoints); else nothing."""
    cache = active()
    if cache is not None:
        for p in paths:
            if p:
                cache.fill(p)


def read_committed(path: str | Path) -> bytes | None:
    """The bytes of the file at `path`. Under an object-store root: the object the store has committed
    there, read without filling the output it lies in (a packed dataset's `index.json` without its
    shards: what model and dataset cards read), or None when no committed output lists it. Else the local
    file, or None when there is none."""
    cache = active()
    key = cache.key_of(path) if cache is not None else None
    if key is None:
        p = Path(path)
        return p.read_bytes() if p.is_file() else None
    try:
        return cache.store.read_bytes(key)
    except UncommittedError:
        return None


def committed_files(folder: str | Path) -> list[Path]:
    """The files under `folder`, sorted: under an object-store root the objects the store has committed
    there (as paths in the cache, present locally or not: read them with `read_committed`), else the files
    on the local disk."""
    cache = active()
    key = cache.key_of(folder) if cache is not None else None
    if key is None:
        folder = Path(folder)
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return [cache.path_of(obj) for obj in cache.store.list(key)]


def release_paths(*paths: str | Path | None, room: int = 0) -> None:
    """Under an object-store root: the running step is done with its local copies of these committed
    outputs (the cache may evict them; a fill brings them back), and is about to write about `room`
    bytes; else nothing."""
    cache = active()
    if cache is not None:
        for p in paths:
            if p:
                cache.release(p)
        cache.make_room(room)


def committed_names(path: str | Path) -> list[str]:
    """Under an object-store root, the names under folder `path` holding committed outputs in the store
    (also those the local cache has evicted); else [] (a local folder has only what is on disk)."""
    cache = active()
    return cache.committed_names(path) if cache is not None else []


def is_committed(path: str | Path) -> bool:
    """Under an object-store root, whether `path` is committed in the store; else False."""
    cache = active()
    return cache.is_committed(path) if cache is not None else False


def after_delete(path: str | Path) -> None:
    """`path` was deleted locally on purpose: under an object-store root, delete it from the store too."""
    cache = active()
    if cache is not None:
        cache.forget(path)


def after_commit(target: str | Path) -> None:
    """Called by `lm_platform.atomic` once `target` is in place: publish it when it lies in a store's cache."""
    cache = active()
    if cache is not None and cache.key_of(target) is not None:
        cache.publish(target)


atomic.on_commit(after_commit)
