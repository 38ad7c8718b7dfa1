"""Versions for the asset graph, computed without Dagster.

- `code_version(base, *slices)`: a hash of a code version and the recipe slice an asset's factory reads
  (pydantic models, dicts, lists, scalars), so that editing one source's filter marks that source's assets
  (and what lies downstream) stale, and nothing else.
- `content_version(*paths)`: a hash of what an asset wrote (file names relative to each path, and bytes),
  so that rematerializing an asset whose output did not change reports the same data version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, Path):
        return str(value)
    return value


def code_version(base: str, *slices: Any) -> str:
    """`base` (the code's own version) and the recipe slices, hashed: 16 hex digits, prefixed by `base`."""
    text = json.dumps([_plain(s) for s in slices], sort_keys=True, ensure_ascii=False, default=str)
    return f"{base}-{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"


def _files(path: Path) -> Iterable[tuple[str, Path]]:
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                yield p.relative_to(path).as_posix(), p
    elif path.is_file():
        yield path.name, path


def content_version(*paths: str | Path, exclude: Iterable[str] = ()) -> str:
    """A hash of the files at `paths` (a file, or every file under a directory, in name order): their
    relative names and bytes. Files whose name is in `exclude` are left out (e.g. a report that records a
    time). Missing paths count as empty."""
    skip = set(exclude)
    h = hashlib.blake2b(digest_size=16)
    for i, root in enumerate(paths):
        h.update(f"\0root{i}\0".encode())
        for name, p in _files(Path(root)):
            if p.name in skip:
                continue
            h.update(name.encode() + b"\0")
            with p.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(CHUNK), b""):
                    h.update(chunk)
            h.update(b"\0")
    return h.hexdigest()
