"""The storage interface: a flat key space of objects, and the commit protocol on top of it.

Keys are `/`-separated paths relative to the store's root (`demo/tokenizer/tokenizer.json`). A backend
implements a few primitives (put, get, ranged get, list, delete); `Store` builds on them the operations the
platform uses, all of which honour one rule: **an output exists only once its manifest is committed.**

Publishing an output (a file or a directory, under one key) is write-then-commit, for stores that have no
rename: the old manifest is removed first (the output is uncommitted from then on), objects left under the
key by an earlier or killed write are deleted, the new objects are uploaded, and a small manifest listing
every object with its size and SHA-256 is written last, under `_commits/<key>.json` (as datatrove's
completion markers). A killed write therefore leaves no manifest, or none that points at partial data.
Readers ask for committed objects only: `read_bytes`, `read_range`, `get_file` and `list` refuse or skip a
key no manifest lists. `sweep` deletes what no manifest lists (the leftovers of killed writes) and aborts
incomplete multipart uploads, once they are older than a grace period (so a write still running elsewhere
is left alone).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

COMMITS = "_commits"
MANIFEST_FORMAT = 1

T = TypeVar("T")


class UncommittedError(FileNotFoundError):
    """A key that no committed manifest lists (absent, or left by a write that never committed)."""


class Throttled(Exception):
    """The store asked us to slow down (S3's `SlowDown`, HTTP 503): retried with backoff."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_key(key: str) -> str:
    return f"{COMMITS}/{key}.json"


def _under(obj: str, key: str) -> bool:
    """`obj` is the key itself or inside it (`a/b` is under `a`; `a/bc` is not)."""
    return obj == key or obj.startswith(key + "/")


def local_files(path: Path) -> dict[str, Path]:
    """The files of a local output: `{"": path}` for a file, `{relative posix path: path}` for a directory."""
    if path.is_file():
        return {"": path}
    return {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}


def object_key(key: str, rel: str) -> str:
    return f"{key}/{rel}" if rel else key


class Store(ABC):
    """A store of objects with committed outputs. `url` is the root shown to users (`s3://bucket/prefix`,
    or a folder); `concurrency` bounds the transfers one publish or fill runs at once; `retries` the
    attempts of one request that the store throttled."""

    url: str
    concurrency: int = 8
    retries: int = 6
    backoff_s: float = 0.2

    # ---- primitives a backend implements -------------------------------------------------------------
    @abstractmethod
    def _put_file(self, local: Path, key: str) -> None: ...

    @abstractmethod
    def _put_bytes(self, data: bytes, key: str) -> None: ...

    @abstractmethod
    def _get_file(self, key: str, local: Path) -> None: ...

    @abstractmethod
    def _get_bytes(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes (`start:end` when given); FileNotFoundError when absent."""

    @abstractmethod
    def _list(self, prefix: str) -> dict[str, tuple[int, float, str]]:
        """Every object whose key starts with `prefix`: key -> (size, modified time in epoch seconds, a tag
        that changes when the object is rewritten: the ETag, or the file's mtime in nanoseconds)."""

    @abstractmethod
    def _delete(self, keys: list[str]) -> None: ...

    def abort_uploads(self, prefix: str, older_than_s: float = 0.0) -> int:
        """Abort incomplete multipart uploads under `prefix` started more than `older_than_s` ago."""
        return 0

    # ---- helpers ---------------------------------------------------------------------------------------
    def url_of(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}" if key else self.url

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying with exponential backoff and jitter while the store throttles it."""
        for attempt in range(self.retries):
            try:
                return fn()
            except Exception as e:
                if not self.is_throttle(e) or attempt == self.retries - 1:
                    raise
                time.sleep(self.backoff_s * (2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    @staticmethod
    def is_throttle(e: BaseException) -> bool:
        text = f"{type(e).__name__} {e}"
        return isinstance(e, Throttled) or any(
            s in text for s in ("SlowDown", "reduce your request rate", "Throttl", "TooManyRequests", "503")
        )

    def _parallel(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> None:
        items = list(items)
        if len(items) <= 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            for _ in pool.map(fn, items):
                pass

    # ---- manifests ---------------------------------------------------------------------------------------
    def manifest(self, key: str) -> dict[str, Any] | None:
        """The committed manifest of output `key`, or None."""
        try:
            raw = self._retry(lambda: self._get_bytes(manifest_key(key)))
        except FileNotFoundError:
            return None
        return json.loads(raw)

    def manifests(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every committed output whose key is `prefix` or lies under it: key -> manifest."""
        listing = self._retry(lambda: self._list(f"{COMMITS}/{prefix}"))
        keys = [k[len(COMMITS) + 1 : -len(".json")] for k in listing if k.endswith(".json")]
        keys = [k for k in keys if not prefix or _under(k, prefix)]
        out: dict[str, dict[str, Any]] = {}

        def load(k: str) -> None:
            m = self.manifest(k)
            if m is not None:
                out[k] = m

        self._parallel(load, keys)
        return dict(sorted(out.items()))

    def manifest_index(self, key: str) -> dict[str, str]:
        """The committed outputs at `key`, above it or under it: key -> the manifest object's tag. One
        listing of the key's top folder, no manifest read (what a cache compares with its copies)."""
        top = key.split("/")[0]
        listing = self._retry(lambda: self._list(f"{COMMITS}/{top}"))
        out = {}
        for k, (_, _, tag) in listing.items():
            if k.endswith(".json"):
                out_key = k[len(COMMITS) + 1 : -len(".json")]
                if _under(out_key, key) or _under(key, out_key):
                    out[out_key] = tag
        return dict(sorted(out.items()))

    def covering(self, obj: str) -> tuple[str, dict[str, Any]] | None:
        """The committed output (key, manifest) that lists object `obj`: the object's own output, or the
        directory output it lies in."""
        holders = [k for k in self.manifest_index(obj) if _under(obj, k)]
        for key in sorted(holders, key=len, reverse=True):
            m = self.manifest(key)
            if m is not None:
                rel = obj[len(key) + 1 :] if obj != key else ""
                return (key, m) if rel in m["files"] else None
        return None

    def _committed_object(self, obj: str) -> dict[str, Any]:
        found = self.covering(obj)
        if found is None:
            raise UncommittedError(f"{self.url_of(obj)}: no committed output lists this object")
        key, m = found
        return m["files"][obj[len(key) + 1 :] if obj != key else ""]

    # ---- the operations the platform uses -------------------------------------------------------------
    def publish(self, local: Path, key: str) -> dict[str, Any]:
        """Write the file or directory `local` as output `key`, then commit it (manifest last). Outputs
        nested in a directory output are replaced with it, as a local directory replaces its content."""
        local = Path(local)
        files = local_files(local)
        mkey = manifest_key(key)
        # Uncommit first: from here until the new manifest lands, readers see no output under this key.
        self._retry(lambda: self._delete([mkey]))
        related = self.manifest_index(key)
        nested = [k for k in related if k != key and _under(k, key)]
        self._retry(lambda: self._delete([manifest_key(k) for k in nested]))
        self._drop_from_ancestors(key, [k for k in related if k != key and _under(key, k)])
        new = {object_key(key, rel) for rel in files}
        stale = [k for k in self._retry(lambda: self._list(key)) if _under(k, key) and k not in new]
        if stale:
            self._retry(lambda: self._delete(stale))
        entries: dict[str, dict[str, Any]] = {}

        def upload(item: tuple[str, Path]) -> None:
            rel, path = item
            entries[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
            self._retry(lambda: self._put_file(path, object_key(key, rel)))

        self._parallel(upload, files.items())
        manifest = {
            "format": MANIFEST_FORMAT,
            "key": key,
            "kind": "file" if local.is_file() else "dir",
            "files": dict(sorted(entries.items())),
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        self._retry(lambda: self._put_bytes(data, mkey))
        return manifest

    def _drop_from_ancestors(self, key: str, ancestors: list[str]) -> None:
        """A committed directory output that holds `key` stops listing its objects (they change now)."""
        for anc in ancestors:
            m = self.manifest(anc)
            if m is None:
                continue
            inner = key[len(anc) + 1 :]
            kept = {r: v for r, v in m["files"].items() if not _under(r, inner)}
            if kept != m["files"]:
                m["files"] = kept
                data = json.dumps(m, indent=1, sort_keys=True).encode()
                self._retry(lambda d=data, a=anc: self._put_bytes(d, manifest_key(a)))

    def get(self, key: str, local: Path, have: dict[str, Path] | None = None) -> dict[str, Any]:
        """Copy committed output `key` to `local` (a file, or a directory with its files); each object is
        checked against the manifest's size and SHA-256. UncommittedError when `key` is not committed.
        `have`: local files by SHA-256 (a cache's other outputs): an object with the same content is
        hard-linked from there instead of transferred (a checkpoint export shares its step's weights)."""
        m = self.manifest(key)
        if m is None:
            raise UncommittedError(f"{self.url_of(key)}: not a committed output")
        local = Path(local)
        have = have or {}

        def download(item: tuple[str, dict[str, Any]]) -> None:
            rel, meta = item
            dst = local / rel if rel else local
            dst.parent.mkdir(parents=True, exist_ok=True)
            src = have.get(meta["sha256"])
            if src is not None and src.is_file() and src.stat().st_size == meta["size"]:
                try:
                    os.link(src, dst)
                    return
                except OSError:
                    pass
            self._retry(lambda: self._get_file(object_key(key, rel), dst))
            if dst.stat().st_size != meta["size"] or sha256_file(dst) != meta["sha256"]:
                raise UncommittedError(f"{self.url_of(object_key(key, rel))}: differs from its manifest")

        if m["kind"] == "dir":
            local.mkdir(parents=True, exist_ok=True)
        self._parallel(download, m["files"].items())
        return m

    def read_bytes(self, obj: str) -> bytes:
        meta = self._committed_object(obj)
        data = self._retry(lambda: self._get_bytes(obj))
        if len(data) != meta["size"]:
            raise UncommittedError(f"{self.url_of(obj)}: {len(data)} bytes, its manifest says {meta['size']}")
        return data

    def read_range(self, obj: str, start: int, end: int) -> bytes:
        """Bytes `start:end` of a committed object (a range request: nothing else is transferred)."""
        meta = self._committed_object(obj)
        end = min(end, meta["size"])
        if start >= end:
            return b""
        return self._retry(lambda: self._get_bytes(obj, start, end))

    def exists(self, key: str) -> bool:
        """`key` is a committed output or an object listed by one."""
        return key in self.manifest_index(key) or self.covering(key) is not None

    def manifest_tag(self, key: str) -> str | None:
        """The tag of output `key`'s manifest object (changes whenever it is rewritten), or None."""
        found = self._retry(lambda: self._list(manifest_key(key)))
        st = found.get(manifest_key(key))
        return st[2] if st else None

    def list(self, prefix: str = "") -> list[str]:
        """The committed objects under `prefix` (uncommitted leftovers are not listed)."""
        out = []
        for key, m in self.manifests().items() if not prefix else self._manifests_touching(prefix).items():
            for rel in m["files"]:
                obj = object_key(key, rel)
                if not prefix or _under(obj, prefix):
                    out.append(obj)
        return sorted(out)

    def _manifests_touching(self, prefix: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}

        def load(k: str) -> None:
            m = self.manifest(k)
            if m is not None:
                found[k] = m

        self._parallel(load, list(self.manifest_index(prefix)))
        return dict(sorted(found.items()))

    def delete(self, key: str) -> None:
        """Uncommit output `key` (and outputs nested in it), then delete its objects."""
        nested = [k for k in self.manifest_index(key) if _under(k, key)]
        self._retry(lambda: self._delete([manifest_key(k) for k in nested]))
        objs = [k for k in self._retry(lambda: self._list(key)) if _under(k, key)]
        if objs:
            self._retry(lambda: self._delete(objs))

    def sweep(self, prefix: str = "", older_than_s: float = 3600.0) -> tuple[list[str], int]:
        """Delete objects under `prefix` that no committed manifest lists and that are older than
        `older_than_s` (what killed writes left), and abort multipart uploads as old. Returns the deleted
        keys and the number of uploads aborted."""
        listed = {
            object_key(k, rel) for k, m in self._manifests_touching(prefix).items() for rel in m["files"]
        }
        if not prefix:
            listed = {object_key(k, rel) for k, m in self.manifests().items() for rel in m["files"]}
        now = time.time()
        stray = [
            k
            for k, (_, mtime, _) in self._retry(lambda: self._list(prefix)).items()
            if not k.startswith(COMMITS + "/")
            and (not prefix or _under(k, prefix))
            and k not in listed
            and now - mtime >= older_than_s
        ]
        if stray:
            self._retry(lambda: self._delete(stray))
        return sorted(stray), self.abort_uploads(prefix, older_than_s)
