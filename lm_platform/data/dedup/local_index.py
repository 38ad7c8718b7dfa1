"""A single-writer working copy of an on-disk index (the exact-dedup SQLite index) for clusters.

SQLite in WAL mode needs shared memory and POSIX locks that network volumes (NFS, CephFS, EFS...) do not
give reliably, and pods on different hosts cannot share it. So a pod that updates the index works on a
copy on its own local disk and publishes it back to the shared volume atomically when it is done:

    with local_working_copy(shared_dir) as local_dir:
        with ExactIndex(local_dir, ...) as index: ...

Only one pod writes at a time: the exact-dedup steps of a recipe form a chain in the asset graph (each
source depends on the sources that win over it), and the publish fails if another writer published a
newer copy in between (the generation file changed), instead of silently losing its keys.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from lm_platform.storage import cache

GENERATION_FILE = ".generation"


class ConcurrentWriterError(RuntimeError):
    """Another writer published the index while this one worked on its copy."""


def _generation(directory: Path) -> str | None:
    marker = directory / GENERATION_FILE
    return marker.read_text(encoding="utf-8").strip() if marker.is_file() else None


@contextmanager
def local_working_copy(shared_dir: str | Path, scratch: str | Path | None = None) -> Iterator[Path]:
    """Copy `shared_dir` (if any) to local scratch, yield the copy, and on success replace `shared_dir`
    with it atomically (rename of a sibling directory on the same volume). On error the shared copy is
    left as it was."""
    shared = Path(shared_dir)
    work = Path(tempfile.mkdtemp(prefix="lm-index-", dir=scratch))
    local = work / shared.name
    try:
        base_generation = _generation(shared)
        if shared.is_dir():
            shutil.copytree(shared, local)
        else:
            local.mkdir(parents=True)
        yield local
        if _generation(shared) != base_generation:
            raise ConcurrentWriterError(f"{shared} was published by another writer while this one ran")
        (local / GENERATION_FILE).write_text(uuid.uuid4().hex, encoding="utf-8")
        shared.parent.mkdir(parents=True, exist_ok=True)
        staging = shared.with_name(f".{shared.name}.{uuid.uuid4().hex}.tmp")
        shutil.copytree(local, staging)
        old = shared.with_name(f".{shared.name}.{uuid.uuid4().hex}.old")
        if shared.exists():
            os.rename(shared, old)
        os.rename(staging, shared)
        shutil.rmtree(old, ignore_errors=True)
        _published(shared)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _published(shared: Path) -> None:
    """Under an object-store root the shared copy lies in the store's cache: publish it to the store."""
    cache.after_commit(shared)


def index_dir(shared_dir: str | Path, local: bool) -> AbstractContextManager[Path]:
    """`local_working_copy(shared_dir)` when `local` or under an object-store root (whose copy is then
    published to the store), else `shared_dir` itself (worked on in place)."""
    local = local or cache.object_url(shared_dir) is not None
    return local_working_copy(shared_dir) if local else nullcontext(Path(shared_dir))
