"""checkpoint/<stage> on the k8s profile, end to end through the real PipesK8sClient with the cluster
emulated at the Kubernetes API client boundary (k8s_emulation.py): the trainer runs as the pod's command,
its logs and metadata reach the asset through dagster-k8s's own pod-log Pipes reader, the pod is deleted
when it completes, and a pod killed mid-run and launched again resumes from its newest step checkpoint."""

from __future__ import annotations

import logging
import sys
import time

import dagster as dg
import kubernetes
import pytest
from dagster_k8s.client import DagsterKubernetesClient

from lm_platform.defs.deployment import build_deployment_definitions
from lm_platform.defs.k8s_trainer import K8sTrainer
from lm_platform.defs.resources import LMStorage
from lm_platform.deployment.profile import parse_profile
from lm_platform.paths import Layout
from lm_platform.recipe import load_recipe
from lm_platform_tests.conftest import write_demo_variant
from lm_platform_tests.k8s_emulation import EmulatedCoreV1Api
from lm_platform_tests.training_fixtures import TINY, base_tokenizer, synthetic_dataset

pytestmark = pytest.mark.slow

SECRET = "hub-token-value-never-logged"
KEY = dg.AssetKey(["checkpoint", "main"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny one-stage recipe, its tokenizer and packed dataset on the 'volume' (a temp storage root),
    and a k8s profile whose storage mount path is that root."""
    tmp = tmp_path_factory.mktemp("k8s")

    def mutate(raw):
        raw["model"] = {"init": "scratch", **{k: v for k, v in TINY.items()}}
        main = {k: v for k, v in raw["stages"][0].items() if k in ("name", "blend")}
        main.update(
            seq_len=16, micro_batch_size=4, epochs=2, lr=1e-2, warmup_steps=1, log_every=4, checkpoint_every=6
        )
        raw["stages"] = [main]
        for section in (
            "finetune",
            "merges",
            "exports",
        ):  # the demo fine-tunes its anneal stage, not kept here
            raw.pop(section, None)
        raw["generation"]["prompts"] = []

    recipe = load_recipe(str(write_demo_variant(tmp, mutate)))
    storage = tmp / "volume"
    layout = Layout(storage, recipe.name)
    tok_dir = base_tokenizer(layout.tokenizer())
    from transformers import AutoTokenizer

    synthetic_dataset(
        layout.dataset("main"), vocab_size=len(AutoTokenizer.from_pretrained(str(tok_dir))), seq_len=16
    )
    profile = parse_profile(
        {
            "kind": "k8s",
            "image": "lm-platform:test",
            "python": sys.executable,
            "namespace": "lm-platform",
            "storage": {"pvc": "lm-platform-data", "mount_path": str(storage)},
            "secrets": [{"env": "HF_TOKEN", "secret": "lm-platform-hub", "key": "token"}],
            "trainer": {"shm_size": "1Gi", "resources": {"cpu_request": "1", "memory_limit": "4Gi"}},
        }
    )
    return recipe, profile, storage, layout


@pytest.fixture
def cluster(monkeypatch):
    api = EmulatedCoreV1Api(secrets={("lm-platform", "lm-platform-hub"): {"token": SECRET}})
    client = DagsterKubernetesClient(
        batch_api=None,
        core_api=api,
        logger=logging.info,
        sleeper=lambda s: time.sleep(min(s, 0.05)),  # the emulated cluster polls fast
        timer=time.time,
    )
    monkeypatch.setattr(DagsterKubernetesClient, "production_client", staticmethod(lambda *a, **k: client))
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda *a, **k: None)
    return api


def _materialize(world, instance):
    recipe, profile, storage, _ = world
    defs = build_deployment_definitions(recipe, profile, prefix=[])
    trainer = defs.resources["trainer"]
    assert isinstance(trainer, K8sTrainer)
    return dg.materialize(
        [defs.get_assets_def(KEY)],
        instance=instance,
        resources={"storage": LMStorage(root=str(storage)), "trainer": trainer},
        raise_on_error=False,
    )


def _metadata(instance) -> dict:
    event = instance.get_latest_materialization_event(KEY)
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_trainer_pod_reports_through_pipes_and_is_deleted(world, cluster):
    recipe, profile, storage, layout = world
    instance = dg.DagsterInstance.ephemeral()
    stamps: list[str] = []
    pump = cluster._pump

    def recording_pump(pod):
        pump(pod)
        stamps.extend(ts for ts, _ in pod.lines)

    cluster._pump = recording_pump
    result = _materialize(world, instance)
    assert result.success
    # The log stream's timestamps increase strictly (the Pipes reader deduplicates by them on reconnect).
    assert len(stamps) > 3 and stamps == sorted(stamps) and len(set(stamps)) == len(stamps)

    # The trainer's own metadata reached the asset through the pod-log Pipes reader.
    meta = _metadata(instance)
    assert meta["steps"] == 24 and meta["tokens_seen"] > 0 and "final_val_loss" in meta
    assert meta["path"] == str(layout.checkpoint("main"))
    assert (layout.checkpoint("main") / "model.safetensors").is_file()
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("[main] checkpoint step_" in m for m in logs), "trainer log lines are forwarded"

    # One pod, built from the stage and the profile, deleted when it completed.
    (pod,) = cluster.created
    c = pod.spec.containers[0]
    assert c.command[:3] == [sys.executable, "-m", "lm_platform.training.launch"]
    assert str(c.resources.limits["nvidia.com/gpu"]) == "1"
    assert pod.metadata.labels["lm-platform.dev/stage"] == "main"
    assert pod.spec.termination_grace_period_seconds == profile.termination_grace_period_seconds
    assert cluster.deleted == [pod.metadata.name] and not cluster.pods

    # The hub token: a Secret reference in the spec, resolved only inside the pod; never logged.
    (token,) = [e for e in c.env if e.name == "HF_TOKEN"]
    assert token.value is None and token.value_from.secret_key_ref.name == "lm-platform-hub"
    assert SECRET not in str(pod.to_dict())
    assert not any(SECRET in (m or "") for m in logs) and SECRET not in str(meta)


def test_pod_killed_mid_run_then_relaunched_resumes(world, cluster):
    recipe, profile, storage, layout = world
    run_dir = layout.checkpoint("main").with_name("main.run")
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(layout.checkpoint("main"), ignore_errors=True)
    instance = dg.DagsterInstance.ephemeral()

    cluster.kill_when = lambda line: "[main] checkpoint step_" in line  # evicted after its first checkpoint
    first = _materialize(world, instance)
    assert not first.success
    assert len(cluster.deleted) == 1, "the failed pod is deleted too"
    assert not (layout.checkpoint("main") / "model.safetensors").exists()
    steps = sorted(p.name for p in run_dir.glob("step_*"))
    assert steps, "the killed pod left a step checkpoint"

    cluster.kill_when = None
    second = _materialize(world, instance)
    assert second.success
    meta = _metadata(instance)
    assert meta["resumed_from"] in steps
    assert (layout.checkpoint("main") / "model.safetensors").is_file()
