"""The storage interface on a local folder: objects are files under the folder, written atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lm_platform.atomic import atomic_path
from lm_platform.storage.base import Store


class LocalStore(Store):
    """Objects as files under `root` (`<root>/<key>`); manifests under `<root>/_commits/`."""

    def __init__(self, root: str | Path, concurrency: int = 4):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        self.concurrency = concurrency

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"{key!r} is outside the store {self.root}")
        return path

    def _put_file(self, local: Path, key: str) -> None:
        with atomic_path(self._path(key)) as tmp:
            shutil.copyfile(local, tmp)

    def _put_bytes(self, data: bytes, key: str) -> None:
        with atomic_path(self._path(key)) as tmp:
            tmp.write_bytes(data)

    def _get_file(self, key: str, local: Path) -> None:
        shutil.copyfile(self._path(key), local)

    def _get_bytes(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(path)
        with open(path, "rb") as f:
            if start is None:
                return f.read()
            f.seek(start)
            return f.read((end if end is not None else path.stat().st_size) - start)

    def _list(self, prefix: str) -> dict[str, tuple[int, float, str]]:
        # The folder holding the prefix, then a filter on the full key.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(head) if head else self.root
        out: dict[str, tuple[int, float, str]] = {}
        if not base.is_dir():
            return out
        for dirpath, _, names in os.walk(base):
            for name in names:
                p = Path(dirpath) / name
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not name.startswith(".tmp-"):
                    st = p.stat()
                    out[key] = (st.st_size, st.st_mtime, f"{st.st_size}:{st.st_mtime_ns}")
        return out

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
