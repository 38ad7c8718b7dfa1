"""Storage: one interface for a local folder and an object store, with a commit protocol and a local cache.

- `base.Store`: read, write-then-commit (`publish`), list, exists, delete, range reads, `sweep`.
- `local.LocalStore`: a folder; `fsspec_store.FsspecStore`: s3:// through s3fs.
- `cache.LocalCache`: the local files the platform works on under an object-store root, filled from and
  published to the store, bounded in size.
- `layout.StoreLayout`: `paths.Layout`'s locations in that cache, filled when asked for; `layout_for(root,
  recipe)` gives it for an `s3://` root and a plain `Layout` for a folder.
"""

from lm_platform.storage.base import Store, Throttled, UncommittedError
from lm_platform.storage.cache import LocalCache, active, is_object_url, open_cache
from lm_platform.storage.layout import StoreLayout, layout_for
from lm_platform.storage.local import LocalStore

__all__ = [
    "LocalCache",
    "LocalStore",
    "Store",
    "StoreLayout",
    "Throttled",
    "UncommittedError",
    "active",
    "is_object_url",
    "layout_for",
    "open_cache",
]
