"""The code location for one recipe under one deployment profile."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from lm_platform.defs import automation
from lm_platform.defs.assets import build_assets
from lm_platform.defs.automation import with_training_automation
from lm_platform.defs.k8s import (
    executor,
    fan_out_partitions,
    key_prefix,
    prefixed,
)
from lm_platform.defs.resources import LMStorage
from lm_platform.deployment.profile import Profile, load_profile
from lm_platform.recipe.schema import Recipe


def trainer_resource(profile: Profile, recipe: Recipe) -> dg.PipesClient:
    """Local: a subprocess. k8s: a pod per stage run (`defs/k8s_trainer.py`: imported only here, so a
    local code location and each of its step processes never load the Kubernetes client)."""
    if profile.kind == "k8s":
        from lm_platform.defs.k8s_trainer import K8sTrainer

        return K8sTrainer(profile, recipe)
    return dg.PipesSubprocessClient()


def build_deployment_definitions(
    recipe: Recipe, profile: Profile | None = None, prefix: Sequence[str] | None = None
) -> dg.Definitions:
    """The recipe's assets (under `prefix`, default $LM_PLATFORM_KEY_PREFIX), the training automation,
    and the profile's trainer, storage root and executor (default profile: $LM_PLATFORM_PROFILE)."""
    profile = profile or load_profile()
    prefix = key_prefix(recipe) if prefix is None else list(prefix)
    assets = with_training_automation(prefixed(build_assets(recipe), prefix), recipe, prefix)
    assets = fan_out_partitions(profile, assets)
    storage = (
        LMStorage(root=profile.storage_root(), local_index=True) if profile.kind == "k8s" else LMStorage()
    )
    auto = automation.build(recipe, prefix, running=profile.sensors_running, training=True)
    return dg.Definitions(
        assets=assets,
        resources={"storage": storage, "trainer": trainer_resource(profile, recipe)},
        sensors=auto.sensors,
        schedules=auto.schedules,
        executor=executor(profile, assets),
    )
