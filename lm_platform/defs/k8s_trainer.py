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
from lm_platform.training.contract import TrainerLaunch


class K8sTrainer(PipesK8sClient):
    """`PipesK8sClient` that runs the trainer launch of `checkpoint/<stage>` (a `TrainerLaunch`, in the
    Pipes extras: the same value whose command the local subprocess client runs) as the stage's GPU pod
    (spec from the launch, the recipe stage and the profile), waits up to the profile's
    `pod_wait_timeout_seconds`, and deletes the pod when it completes. Logs and metadata come back through
    the pod's log stream (Pipes)."""

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
        launch = TrainerLaunch.from_extras(extras)
        return super().run(
            context=context,
            extras=extras,
            namespace=self.profile.namespace,
            base_pod_meta={"labels": trainer_pod_labels(self.profile, self.recipe, launch.stage)},
            base_pod_spec=trainer_pod_spec(self.profile, self.recipe, launch),
            pod_wait_timeout=self.profile.pod_wait_timeout_seconds,
            delete_pod_on_completion=True,
        )
