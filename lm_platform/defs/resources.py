"""Resources: where artifacts live, and how training processes are launched."""

from pathlib import Path

import dagster as dg

from lm_platform.paths import Layout, default_storage_root


class LMStorage(dg.ConfigurableResource):
    """Storage root for all artifacts (default $LM_PLATFORM_STORAGE or `data/` in the checkout)."""

    root: str = ""
    # Work on a local-disk copy of the exact-dedup index and publish it atomically (single writer; the
    # k8s profile sets it: SQLite on a network volume shared by pods is unsafe).
    local_index: bool = False

    def layout(self, recipe: str) -> Layout:

        return Layout(Path(self.root).expanduser().resolve() if self.root else default_storage_root(), recipe)
