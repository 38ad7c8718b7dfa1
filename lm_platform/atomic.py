"""Atomic writes: build beside the target under a temporary name, then rename into place.

A killed run leaves at most a `.tmp-*` sibling, never a half-written file where a reader looks. Under an
object-store root (`LM_PLATFORM_STORAGE=s3://...`) the target lies in the store's local cache, and once it
is in place it is also published to the store, committed by its manifest (the hook that
`lm_platform.storage.cache` registers with `on_commit`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _tmp_sibling(target: Path) -> Path:
    return target.with_name(f".tmp-{target.name}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path for a file; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    try:
        yield tmp
        os.replace(tmp, target)
        _published(target)
    finally:
        if tmp.exists():
            tmp.unlink()


# Called with each target once it is in place: `lm_platform.storage.cache` registers the publish to an
# object store (a no-op for paths outside a store's cache, and on a local root nothing is registered).
_ON_COMMIT: list[Callable[[Path], None]] = []


def on_commit(hook: Callable[[Path], None]) -> None:
    """Call `hook(target)` after every atomic write of `target` is in place."""
    if hook not in _ON_COMMIT:
        _ON_COMMIT.append(hook)


def _published(target: Path) -> None:
    for hook in _ON_COMMIT:
        hook(target)


def fsync_tree(root: str | Path) -> None:
    """Flush every file under `root`, then each directory (children before parents), to the disk."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)


def fsync_path(path: str | Path) -> None:
    """`fsync` one file or directory (a directory's fsync makes its entries, e.g. a rename, durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(target: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces the directory `target` as a whole. `durable`:
    the files and the directory are fsynced before the rename that publishes them, and the parent after,
    so a power loss never leaves a published directory with missing or empty files."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    tmp.mkdir()
    try:
        yield tmp
        if durable:
            fsync_tree(tmp)
        old = None
        if target.exists():
            old = _tmp_sibling(target)
            os.replace(target, old)
        os.replace(tmp, target)
        if durable:
            fsync_path(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _published(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8"
        )


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
