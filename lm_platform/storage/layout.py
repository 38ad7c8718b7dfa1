"""`Layout` under an object-store root: the same locations, in the store's local cache, filled from the
store's committed outputs when asked for.

Under `LM_PLATFORM_STORAGE=s3://bucket/prefix` the platform still works on local paths (SQLite, memory-mapped
shards, `from_pretrained` need them): those of the store's cache (`lm_platform.storage.cache`). A
`StoreLayout` fills each location from the store before handing it out, so a step on an empty local disk
finds its inputs; every atomic write under the cache is published to the store (`lm_platform.atomic`'s
commit hook, registered by `lm_platform.storage.cache`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_platform.paths import Layout
from lm_platform.storage import cache as store_cache


def layout_for(root: str | Path, recipe: str) -> Layout:
    """The layout of `recipe` under `root`: a local folder, or an object-store URL (`s3://bucket/prefix`,
    whose settings and cache come from the environment, `lm_platform.storage.cache.open_cache`)."""
    if isinstance(root, str) and store_cache.is_object_url(root):
        cache = store_cache.cache_from_env()
        if cache is None or cache.store.url != root.rstrip("/"):
            cache = store_cache.open_cache(root)
        store_cache.activate(cache)
        cache.new_step()
        _sweep_once(cache, recipe)
        return StoreLayout(cache.root, recipe, cache)
    return Layout(Path(root).expanduser().resolve(), recipe)


# What `StoreLayout.base` fills: the model directories its remaining callers (fine-tuning's merges, lineage
# and model cards) resolve model references in themselves. Model versions and evaluations ask `Layout`'s
# own methods (`checkpoint`, `model_snapshot`, `eval_result`, ...), which fill only what they name.
BASE_FILLED = ("checkpoint", "adapter", "merged")
SWEEP_ENV = "LM_PLATFORM_SWEEP_AFTER_S"
_SWEPT: set[tuple[str, str]] = set()


def _sweep_once(cache: Any, recipe: str) -> None:
    """Once per process and recipe: delete what killed writes left under the recipe (objects no manifest
    lists, incomplete multipart uploads) older than $LM_PLATFORM_SWEEP_AFTER_S (default 6 hours; "off")."""
    after = os.environ.get(SWEEP_ENV, str(6 * 3600))
    if after == "off" or (cache.store.url, recipe) in _SWEPT:
        return
    _SWEPT.add((cache.store.url, recipe))
    try:
        cache.store.sweep(recipe, older_than_s=float(after))
    except Exception as e:  # housekeeping: a step does not fail on it (e.g. no ListBucketMultipartUploads)
        warnings.warn(
            f"{cache.store.url_of(recipe)}: the sweep of uncommitted objects failed: {e}", stacklevel=2
        )


# Layout attributes that are not locations of outputs (nothing to fill).
_NOT_FILLED = frozenset({"root", "recipe", "cache"})


@dataclass(frozen=True)
class StoreLayout(Layout):
    """A `Layout` under an object store: the same paths, in the store's local cache, each filled from the
    store's committed outputs when asked for (so a step on an empty local disk finds its inputs). Every
    location method of `Layout` (present and future ones) is filled alike; `base` fills the kinds its
    callers build paths into (`BASE_FILLED`)."""

    cache: Any = field(default=None, compare=False, repr=False)

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if name.startswith("_") or name in _NOT_FILLED or not callable(attr) or name not in _LAYOUT_METHODS:
            return attr
        plain = Layout(self.root, self.recipe)
        cache = object.__getattribute__(self, "cache")

        def filled(*args: Any, **kwargs: Any) -> Any:
            if name == "curated_shards":  # it looks at the shard folder: fill that first
                cache.fill(plain.base / "curated" / (args[0] if args else kwargs["source"]))
            result = getattr(plain, name)(*args, **kwargs)
            for p in result if isinstance(result, list) else [result]:
                if isinstance(p, Path):
                    cache.fill(p)
            return result

        return filled

    @property
    def base(self) -> Path:
        """The recipe's folder, with what the callers that build paths from it read filled: the model
        directories and results (`BASE_FILLED`). Data kinds are filled through their methods."""
        path = self.root / self.recipe
        cache = object.__getattribute__(self, "cache")
        for kind in BASE_FILLED:
            cache.fill(path / kind)
        return path

    def url(self, path: str | Path) -> str:
        """The object URL of a location (what asset metadata shows)."""
        return object.__getattribute__(self, "cache").url_of(path)


_LAYOUT_METHODS = frozenset(
    n for n, v in vars(Layout).items() if callable(v) and not n.startswith("_") and n != "url"
)
