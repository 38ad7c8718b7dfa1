"""Deployment profiles (local or Kubernetes) and the pod specs built from a recipe stage and a profile.

Core code: no Dagster imports. `lm_platform.defs.k8s` turns a profile into Dagster resources, executors
and sensors.
"""

from lm_platform.deployment.profile import (
    PROFILE_ENV,
    Profile,
    ProfileError,
    load_profile,
    parse_profile,
)

__all__ = ["PROFILE_ENV", "Profile", "ProfileError", "load_profile", "parse_profile"]
