"""Where each asset's files live under the storage root. One place, so shell and core agree.

The storage root is a local folder (the default) or an object store (`s3://bucket/prefix`). Under an object
store, `Layout` still hands out local paths: those of the store's local cache (`lm_platform.storage.cache`),
which a `StoreLayout` fills from the store's committed outputs before returning them; every atomic write
under the cache is published to the store (`lm_platform.atomic`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STORAGE_ENV = "LM_PLATFORM_STORAGE"


def default_storage_root() -> Path:
    """$LM_PLATFORM_STORAGE, else `data/` in the project checkout (or the working directory). Under an
    object-store URL, the local folder the platform works on: the store's cache."""
    env = os.environ.get(STORAGE_ENV)
    if env and _is_object_url(env):
        from lm_platform.storage import cache

        return cache.cache_from_env().root
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    base = checkout if (checkout / "pyproject.toml").exists() else Path.cwd()
    return base / "data"


@dataclass(frozen=True)
class Layout:
    """Paths for one recipe's artifacts: `<root>/<recipe>/<asset kind>/<name>`."""

    root: Path
    recipe: str

    @property
    def base(self) -> Path:
        return self.root / self.recipe

    def corpus(self, source: str) -> Path:
        return self.base / "corpus" / f"{source}.parquet"

    def corpus_shard(self, source: str, shard: str) -> Path:
        """One shard of a source whose read is sharded (`corpus/<source>/<shard>.parquet`)."""
        return self.base / "corpus" / source / f"{shard}.parquet"

    def curated(self, source: str) -> Path:
        return self.base / "curated" / f"{source}.parquet"

    def curated_shard(self, source: str, shard: str) -> Path:
        return self.base / "curated" / source / f"{shard}.parquet"

    def excluded_shard(self, source: str, shard: str) -> Path:
        return self.base / "curated" / source / f"{shard}.excluded.parquet"

    def curated_shards(self, source: str) -> list[Path]:
        """Every curated output file of a source (what dedup reads), in shard order: the shard files of
        a sharded source (`curated/<source>/<shard>.parquet`), else the one file."""
        shard_dir = self.base / "curated" / source
        if shard_dir.is_dir():
            shards = sorted(
                p for p in shard_dir.glob("*.parquet") if not p.name.endswith(".excluded.parquet")
            )
            if shards:
                return shards
        return [self.curated(source)]

    def excluded(self, source: str) -> Path:
        return self.base / "curated" / f"{source}.excluded.parquet"

    def dedup_dir(self) -> Path:
        """The dedup stage's index and intermediate files (exact, minhash, near, figures, ...)."""
        return self.base / "dedup"

    def deduped(self, source: str) -> Path:
        return self.base / "deduped" / f"{source}.parquet"

    def reference_lm(self, lang: str) -> Path:
        return self.base / "reference_lm" / lang

    def quality_model(self, lang: str) -> Path:
        return self.base / "quality_model" / lang

    def blend(self, stage: str) -> Path:
        return self.base / "blend" / stage

    def tokens(self, source: str) -> Path:
        """A source's documents tokenized once with the final tokenizer (data/tokens.py)."""
        return self.base / "tokens" / source

    def tokenizer(self) -> Path:
        return self.base / "tokenizer"

    def dataset(self, stage: str) -> Path:
        return self.base / "dataset" / stage

    def checkpoint(self, stage: str) -> Path:
        return self.base / "checkpoint" / stage

    def eval(self, name: str) -> Path:
        return self.base / "eval" / f"{name}.json"

    def model_ref(self, ref: str) -> Path:
        """A fine-tuning model reference (`checkpoint/<stage>`, `adapter/<set>`, `merged/<name>`, or an
        absolute path) as a directory."""
        return Path(ref) if ref.startswith("/") else self.base / ref

    def adapter(self, name: str) -> Path:
        return self.base / "adapter" / name

    def merged(self, name: str) -> Path:
        return self.base / "merged" / name

    def export(self, name: str) -> Path:
        return self.base / "export" / name


def _is_object_url(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def layout_for(root: str | Path, recipe: str) -> Layout:
    """The layout of `recipe` under `root`: a local folder, or an object-store URL (`s3://bucket/prefix`,
    whose settings and cache come from the environment, `lm_platform.storage.cache.open_cache`)."""
    if isinstance(root, str) and _is_object_url(root):
        from lm_platform.storage import cache as store_cache

        cache = store_cache.cache_from_env()
        if cache is None or cache.store.url != root.rstrip("/"):
            cache = store_cache.open_cache(root)
        store_cache.activate(cache)
        return StoreLayout(cache.root, recipe, cache)
    return Layout(Path(root).expanduser().resolve(), recipe)


# Layout attributes that are not locations of outputs (nothing to fill).
_NOT_FILLED = frozenset({"root", "recipe", "cache"})


@dataclass(frozen=True)
class StoreLayout(Layout):
    """A `Layout` under an object store: the same paths, in the store's local cache, each filled from the
    store's committed outputs when asked for (so a step on an empty local disk finds its inputs). Every
    location method of `Layout` (present and future ones) is filled alike; `base` fills the whole recipe
    (for callers that build paths themselves)."""

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
        path = self.root / self.recipe
        object.__getattribute__(self, "cache").fill(path)
        return path

    def url(self, path: str | Path) -> str:
        """The object URL of a location (what asset metadata shows)."""
        return object.__getattribute__(self, "cache").url_of(path)


_LAYOUT_METHODS = frozenset(
    n for n, v in vars(Layout).items() if callable(v) and not n.startswith("_") and n != "url"
)
