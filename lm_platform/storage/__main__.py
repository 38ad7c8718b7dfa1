"""`python -m lm_platform.storage sweep [--older-than-s N] [PREFIX]`: delete what killed writes left in the
store of `$LM_PLATFORM_STORAGE` (objects no committed manifest lists, incomplete multipart uploads) once
they are older than N seconds (default 6 hours: a write still running elsewhere is left alone).
`python -m lm_platform.storage ls [PREFIX]`: the committed objects."""

from __future__ import annotations

import argparse
import os

from lm_platform.paths import STORAGE_ENV
from lm_platform.storage.cache import is_object_url, open_cache
from lm_platform.storage.local import LocalStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lm_platform.storage")
    parser.add_argument("command", choices=["sweep", "ls"])
    parser.add_argument("prefix", nargs="?", default="")
    parser.add_argument("--older-than-s", type=float, default=6 * 3600)
    args = parser.parse_args(argv)
    root = os.environ.get(STORAGE_ENV, "")
    if not root:
        parser.error(f"{STORAGE_ENV} is not set")
    store = open_cache(root).store if is_object_url(root) else LocalStore(root)
    if args.command == "ls":
        for obj in store.list(args.prefix):
            print(store.url_of(obj))
        return 0
    deleted, aborted = store.sweep(args.prefix, args.older_than_s)
    for obj in deleted:
        print(f"deleted {store.url_of(obj)}")
    print(f"{len(deleted)} uncommitted objects deleted, {aborted} incomplete multipart uploads aborted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
