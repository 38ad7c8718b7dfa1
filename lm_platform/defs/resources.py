"""Resources: where artifacts live, and how training processes are launched."""

import os

import dagster as dg

from lm_platform.paths import STORAGE_ENV, Layout, default_storage_root
from lm_platform.storage.layout import layout_for
from lm_platform.training.contract import TrainerLaunch, preempted


class LMStorage(dg.ConfigurableResource):
    """Storage root for all artifacts (default $LM_PLATFORM_STORAGE or `data/` in the checkout)."""

    root: str = ""
    # Work on a local-disk copy of the exact-dedup index and publish it atomically (single writer; the
    # k8s profile sets it: SQLite on a network volume shared by pods is unsafe).
    local_index: bool = False

    def layout(self, recipe: str) -> Layout:
        """A local folder's layout, or under an `s3://` root the layout of its local cache (filled from and
        published to the store)."""

        root = self.root or os.environ.get(STORAGE_ENV, "")
        return layout_for(root or default_storage_root(), recipe)


# A preempted trainer (exit 75, checkpoint written) is retried this many times, resuming from its checkpoint.
PREEMPTION_RETRIES = 3
PREEMPTION_RETRY_WAIT_S = 10


def run_launch(trainer, context: dg.AssetExecutionContext, launch: TrainerLaunch):
    """Run a trainer launch through the `trainer` resource (one launch value: a subprocess runs its command;
    the k8s trainer builds the pod from the extras); a preempted trainer makes the step retry and resume
    from the checkpoint it wrote."""
    try:
        return trainer.run(command=launch.command(), context=context, extras=launch.as_extras())
    except Exception as err:
        if preempted(err):
            raise dg.RetryRequested(PREEMPTION_RETRIES, PREEMPTION_RETRY_WAIT_S) from err
        raise
