"""The trainer resource of the k8s profile: `checkpoint/<stage>` runs as the stage's GPU pod through
Pipes. Its own module so that only k8s deployments import `dagster_k8s` and the Kubernetes client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster_k8s import PipesK8sClient

from lm_platform.deployment.pods import trainer_pod_labels, trainer_pod_spec
from lm_platform.deployment.profile import Profile
from lm_platform.recipe.schema import Recipe


class K8sTrainer(PipesK8sClient):
    """`PipesK8sClient` that turns the trainer command of `checkpoint/<stage>` into the stage's GPU pod
    (spec from the recipe stage and the profile), waits up to the profile's `pod_wait_timeout_seconds`,
    and deletes the pod when it completes. Logs and metadata come back through the pod's log stream
    (Pipes)."""

    def __init__(self, profile: Profile, recipe: Recipe, **kwargs: Any):
        super().__init__(**kwargs)
        self.profile = profile
        self.recipe = recipe

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        command: Sequence[str],
        extras: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> dg.PipesClientCompletedInvocation:
        stage = context.asset_key.path[-1]
        job_file = _job_file(command)
        return super().run(
            context=context,
            extras=extras,
            namespace=self.profile.namespace,
            base_pod_meta={"labels": trainer_pod_labels(self.profile, self.recipe, stage)},
            base_pod_spec=trainer_pod_spec(self.profile, self.recipe, stage, job_file),
            pod_wait_timeout=self.profile.pod_wait_timeout_seconds,
            delete_pod_on_completion=True,
        )


def _job_file(command: Sequence[str]) -> str:
    args = list(command)
    if "--job" not in args or args.index("--job") + 1 >= len(args):
        raise ValueError(f"not a trainer command (no --job FILE): {args}")
    return args[args.index("--job") + 1]
