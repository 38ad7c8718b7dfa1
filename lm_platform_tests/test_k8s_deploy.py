"""Deployment profiles, pod specs and deploy/: validated offline against the Kubernetes OpenAPI schema of
the version `kubectl version --client` reports (kubernetes-validate ships the schemas)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster_k8s.pipes import build_pod_body

from lm_platform.deployment.pods import step_k8s_config, trainer_pod, trainer_pod_spec
from lm_platform.deployment.profile import EXAMPLE_PROFILE, ProfileError, load_profile, parse_profile
from lm_platform.paths import Layout
from lm_platform.recipe import load_recipe
from lm_platform.training.contract import TrainerLaunch
from lm_platform.training.job import make_launch

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def _kube_version() -> str:
    """The cluster version to validate for: kubectl's client version when kubectl is here (a schema for
    it is shipped), else the newest schema kubernetes-validate ships."""
    from kubernetes_validate.utils import all_versions, latest_version

    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True)
        if out.returncode == 0:
            v = json.loads(out.stdout)["clientVersion"]
            candidate = f"{v['major']}.{re.sub(r'[^0-9]', '', v['minor'])}.0"
            if candidate in all_versions():
                return candidate
    return latest_version()


KUBE = _kube_version()


def validate(obj: dict) -> None:
    """Strict OpenAPI validation: unknown fields fail too."""
    try:
        kubernetes_validate.validate(obj, KUBE, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        raise AssertionError(
            f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}: {path}: {exc.message}"
        ) from None


@pytest.fixture(scope="module")
def profile():
    return load_profile("k8s")


# -- profiles ------------------------------------------------------------------------------------------


def test_local_is_the_default_profile(monkeypatch):
    monkeypatch.delenv("LM_PLATFORM_PROFILE", raising=False)
    p = load_profile()
    assert p.kind == "local" and not p.sensors_running


def test_profile_file_is_named_by_the_environment(monkeypatch, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(EXAMPLE_PROFILE.read_text().replace("namespace: lm-platform", "namespace: team-a"))
    monkeypatch.setenv("LM_PLATFORM_PROFILE", str(path))
    p = load_profile()
    assert p.kind == "k8s" and p.namespace == "team-a" and p.sensors_running


def test_bundled_and_deployed_profiles_are_valid():
    for path in (EXAMPLE_PROFILE, DEPLOY / "k8s" / "base" / "profile.yaml"):
        p = load_profile(str(path))
        assert p.kind == "k8s" and p.storage is not None and p.storage.pvc == "lm-platform-data"


def test_bad_profile_fields_are_reported_by_path(tmp_path):
    raw = yaml.safe_load(EXAMPLE_PROFILE.read_text())
    raw["trainer"]["resources"]["memory_limit"] = "64 GB"
    raw["trainer"]["tolerations"][0]["value"] = "x"  # Exists takes no value
    raw["storage"]["mount_path"] = "data"
    raw["secrets"][0]["env"] = "HF-TOKEN"
    raw["termination_grace_period_seconds"] = 5
    raw["trainer"]["stages"]["main"]["shm_sise"] = "1Gi"
    with pytest.raises(ProfileError) as err:
        parse_profile(raw, origin="prof.yaml")
    msg = str(err.value)
    assert msg.startswith("prof.yaml: invalid profile")
    for fragment in (
        "trainer.resources.memory_limit: '64 GB' is not a Kubernetes quantity",
        "trainer.tolerations.0: a toleration with operator 'Exists' takes no value",
        "storage.mount_path: 'data' is not an absolute path",
        "secrets.0.env: 'HF-TOKEN' is not an environment variable name",
        "termination_grace_period_seconds:",
        "trainer.stages.main.shm_sise: Extra inputs are not permitted",
    ):
        assert fragment in msg


def test_k8s_profile_needs_image_and_storage(tmp_path):
    with pytest.raises(ProfileError, match="a k8s profile needs image, storage"):
        parse_profile({"kind": "k8s"})
    path = tmp_path / "x.yaml"
    path.write_text("- not a mapping\n")
    with pytest.raises(ProfileError, match="a profile is a mapping"):
        load_profile(str(path))
    with pytest.raises(ProfileError, match="not 'local', 'k8s' or an existing profile file"):
        load_profile("/no/such/profile.yaml")


# -- trainer pods --------------------------------------------------------------------------------------


def _all_stages():
    for name in ("vi", "ja"):
        recipe = load_recipe(name)
        for stage in recipe.stages:
            yield recipe, stage


@pytest.mark.parametrize("recipe_stage", list(_all_stages()), ids=lambda rs: f"{rs[0].name}-{rs[1].name}")
def test_trainer_pod_of_every_vi_and_ja_stage_validates(profile, recipe_stage):
    recipe, stage = recipe_stage
    launch = make_launch(recipe, stage.name, Layout(Path(profile.storage_root()), recipe.name))
    manifest = trainer_pod(profile, recipe, launch)
    validate(manifest)
    # What PipesK8sClient sends: dagster-k8s's own pod body (with the Pipes environment) from our spec.
    body = build_pod_body(
        pod_name="dagster-run-x",
        image=None,
        command=None,
        env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"},
        base_pod_meta=manifest["metadata"],
        base_pod_spec=manifest["spec"],
    )
    sent = kubernetes.client.ApiClient().sanitize_for_serialization(body)
    validate({"apiVersion": "v1", "kind": "Pod", **sent})

    spec = manifest["spec"]
    (c,) = spec["containers"]
    gpus = stage.train.nproc_per_node
    assert c["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert c["resources"]["requests"]["nvidia.com/gpu"] == gpus
    # The launcher runs the trainer (through torchrun for several GPUs) and reports a preemption as 75.
    assert c["command"][:3] == [profile.python, "-m", "lm_platform.training.launch"]
    assert f"--nproc_per_node={gpus}" in c["command"]
    assert c["command"][-2:] == ["--job", launch.job_file] and launch.job_file.endswith(
        f"/{recipe.name}/checkpoint/{stage.name}.job.json"
    )
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts[profile.storage_root()]]["persistentVolumeClaim"]["claimName"] == "lm-platform-data"
    assert {"name": "LM_PLATFORM_STORAGE", "value": profile.storage_root()} in c["env"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] == profile.termination_grace_period_seconds
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    assert spec["serviceAccountName"] == "lm-platform"


def test_hub_token_comes_from_a_secret_reference_only(profile):
    recipe = load_recipe("vi")
    spec = trainer_pod_spec(profile, recipe, TrainerLaunch("/data/job.json", 1, "main"))
    (token,) = [e for e in spec["containers"][0]["env"] if e["name"] == "HF_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"] == {"name": "lm-platform-hub", "key": "token", "optional": True}


def test_stage_override_changes_only_that_stages_pod(profile):
    recipe = load_recipe("vi")
    main = trainer_pod_spec(profile, recipe, TrainerLaunch("/j", 1, "main"))
    eeve = trainer_pod_spec(profile, recipe, TrainerLaunch("/j", 1, "eeve_3"))
    assert main["containers"][0]["resources"]["requests"]["memory"] == "256Gi"
    assert eeve["containers"][0]["resources"]["requests"]["memory"] == "64Gi"
    shm = {s["name"]: s for s in main["volumes"]}["dshm"]["emptyDir"]["sizeLimit"]
    assert shm == "64Gi"


def test_torchrun_pod_for_a_multi_gpu_stage(profile):
    from lm_platform.recipe.loader import parse_recipe
    from lm_platform.recipe.loader import recipe_path as rp

    raw = yaml.safe_load(rp("vi").read_text())
    raw["stages"][-1]["nproc_per_node"] = 8
    recipe = parse_recipe(raw, base_dir=rp("vi").parent)
    manifest = trainer_pod(
        profile, recipe, make_launch(recipe, raw["stages"][-1]["name"], Layout(Path("/data"), "vi"))
    )
    validate(manifest)
    c = manifest["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert "--nproc_per_node=8" in c["command"] and "lm_platform.training.launch" in c["command"]
    # The pod's grace period reaches torchrun's workers through the launcher.
    grace = {
        "name": "LM_PLATFORM_TERMINATION_GRACE_SECONDS",
        "value": str(profile.termination_grace_period_seconds),
    }
    assert grace in c["env"]


def test_step_pods_of_curated_sources_validate(profile):
    recipe = load_recipe("ja")
    for src in recipe.sources:
        cfg = step_k8s_config(profile, ["curated", src.name])
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "step", **cfg["pod_template_spec_metadata"]},
            "spec": {
                **cfg["pod_spec_config"],
                "containers": [{"name": "step", "image": "x", **cfg["container_config"]}],
            },
        }
        validate(pod)
        assert cfg["container_config"]["resources"]["requests"]["memory"] == "16Gi"
    assert (
        step_k8s_config(profile, ["blend", "main"])["container_config"]["resources"]["requests"]["memory"]
        == "8Gi"
    )


# -- deploy/ -------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_base_renders_and_every_object_validates():
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s" / "base")], capture_output=True, text=True, check=True
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {
        k: sorted(d["metadata"]["name"] for d in docs if d["kind"] == k) for k in {d["kind"] for d in docs}
    }
    assert kinds == {
        "ConfigMap": ["lm-platform-oauth2-proxy", "lm-platform-profile"],
        "Namespace": ["lm-platform"],
        "NetworkPolicy": [
            "allow-dns",
            "code-location",
            "daemon",
            "default-deny",
            "postgres",
            "run-worker",
            "step",
            "trainer",
            "webserver",
            "webserver-read-only",
        ],
        "PersistentVolumeClaim": ["lm-platform-data"],
        "Role": ["lm-platform-launcher"],
        "RoleBinding": ["lm-platform-launcher"],
        "Secret": ["lm-platform-hub", "lm-platform-oauth2-proxy"],
        "Service": ["lm-platform-ui", "lm-platform-ui-read-only"],
        "ServiceAccount": ["lm-platform"],
    }
    for doc in docs:
        validate(doc)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "lm-platform"
    by_kind = {d["kind"]: d for d in docs if d["metadata"]["name"] != "lm-platform-oauth2-proxy"}
    assert by_kind["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    rules = {(r["resources"][0], v) for r in by_kind["Role"]["rules"] for v in r["verbs"]}
    assert {("pods", "create"), ("pods", "delete"), ("pods/log", "get"), ("jobs", "create")} <= rules
    # The ConfigMap carries a valid profile whose PVC and service account are the ones rendered here.
    prof = parse_profile(yaml.safe_load(by_kind["ConfigMap"]["data"]["profile.yaml"]))
    assert prof.storage.pvc == by_kind["PersistentVolumeClaim"]["metadata"]["name"]
    assert prof.service_account == by_kind["ServiceAccount"]["metadata"]["name"]


def _paths(value, prefix=""):
    """Dotted paths of a values tree: list items as `[]`."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        for item in value:
            yield from _paths(item, f"{prefix}[]")
    else:
        yield prefix


def _documented(path: str, keys: list[str]) -> bool:
    """`key` documents `path` when equal; `key.*` documents its free-form subtree; a documented list
    (env, volumes...) documents the Kubernetes objects it holds."""
    for key in keys:
        if key.endswith(".*"):
            if path == key[:-2] or path.startswith(key[:-1]):
                return True
        elif path == key or path.startswith(key + "[]"):
            return True
    return False


def test_helm_values_use_only_documented_chart_keys():
    doc = yaml.safe_load((DEPLOY / "helm" / "chart-keys.yaml").read_text())
    assert doc["chart"] == "dagster"
    from importlib.metadata import version

    assert doc["version"] == version("dagster"), "chart version must match the dagster package"
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    undocumented = [p for p in _paths(values) if not _documented(p, doc["keys"])]
    assert not undocumented, f"keys not on the documented list: {undocumented}"
    assert _documented("runLauncher.type", doc["keys"]) and not _documented("runLauncher.typo", doc["keys"])
    # Every user deployment runs this package's code location for one recipe, keys prefixed.
    for dep in values["dagster-user-deployments"]["deployments"]:
        env = {e["name"]: e["value"] for e in dep["env"]}
        assert dep["dagsterApiGrpcArgs"] == ["-m", "lm_platform.definitions"]
        load_recipe(env["LM_PLATFORM_RECIPE"])
        assert env["LM_PLATFORM_KEY_PREFIX"] == "recipe"
        assert (
            env["LM_PLATFORM_STORAGE"] == load_profile(str(DEPLOY / "k8s/base/profile.yaml")).storage_root()
        )
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def test_production_dagster_yaml_is_a_valid_instance_config(monkeypatch):
    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(var, "x")
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema
    from dagster_k8s import K8sRunLauncher

    raw = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    result = process_config(dagster_instance_config_schema(), raw)
    assert result.success, result.errors
    launcher = process_config(K8sRunLauncher.config_type(), raw["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    assert raw["storage"]["postgres"] and raw["concurrency"]["pools"]["default_limit"] >= 1


def _dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    lines, buf = [], ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        buf += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(buf.strip())
            buf = ""
    return [(line.split(" ", 1)[0].upper(), line.split(" ", 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_stages_args_and_command_match_the_package():
    instr = _dockerfile()
    stages = [a.split(" AS ")[-1].strip() for i, a in instr if i == "FROM"]
    assert stages == ["build", "runtime"]
    args: dict[str, str | None] = {}
    for i, a in instr:  # the global ARGs (before the first FROM) carry the defaults
        if i == "ARG":
            args.setdefault(a.split("=")[0], a.split("=")[1] if "=" in a else None)
    assert args["VARIANT"] == "cpu"  # cpu by default, cu126/cu128 for CUDA
    assert any("download.pytorch.org/whl/${VARIANT}" in a for i, a in instr if i == "RUN")
    import tomllib

    torch_pin = [a for i, a in instr if i == "ARG" and a.startswith("TORCH_VERSION=")][0].split("=")[1]
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("torch") for d in deps) and torch_pin.startswith("2.")
    user = [a for i, a in instr if i == "USER"][-1]
    assert not user.startswith("0") and user.split(":")[0] == "1000"
    cmd = json.loads([a for i, a in instr if i == "CMD"][-1])
    scripts = {e.name for e in entry_points(group="console_scripts")}
    assert cmd[0] in scripts, f"{cmd[0]} is not a console script of the installed packages"
    assert cmd[:5] == ["dagster", "api", "grpc", "-m", "lm_platform.definitions"]
    # The profile's interpreter is the image's venv, and the trainer module it runs exists.
    prof = load_profile(str(DEPLOY / "k8s/base/profile.yaml"))
    assert prof.python == "/opt/venv/bin/python" and "python -m venv /opt/venv" in " ".join(
        a for _, a in instr
    )
    assert (REPO / "lm_platform" / "training" / "train.py").is_file()
    env = " ".join(a for i, a in instr if i == "ENV")
    assert f"LM_PLATFORM_STORAGE={prof.storage_root()}" in env


def test_k8s_profile_fans_steps_out_with_per_asset_pod_config(profile):
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    from lm_platform.defs.deployment import build_deployment_definitions
    from lm_platform.defs.k8s import executor_config

    def dg_key(path):
        import dagster as dg

        return dg.AssetKey(path)

    recipe = load_recipe("ja")
    defs = build_deployment_definitions(recipe, profile, prefix=[])
    repo = defs.get_repository_def()
    assert repo.get_job("__ASSET_JOB").executor_def.name == "k8s_job_executor"
    assets = list(repo.assets_defs_by_key.values())
    cfg = executor_config(profile, assets)
    assert process_config(k8s_job_executor.config_schema.config_type, cfg).success
    sharded = [s for s in recipe.sources if s.shards > 1]
    assert sharded, "ja has sharded sources"
    for src in sharded:
        step = cfg["per_step_k8s_config"][f"curated__{src.name}"]
        assert step["container_config"]["resources"]["requests"]["memory"] == "16Gi"
        assert (
            step["pod_spec_config"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "lm-platform-data"
        )
    exact = cfg["per_step_k8s_config"][f"exact_dedup__{recipe.sources[0].name}"]
    assert exact["container_config"]["resources"]["requests"]["memory"] == "32Gi"
    local = build_deployment_definitions(recipe, load_profile("local"), prefix=[]).get_repository_def()
    assert local.get_job("__ASSET_JOB").executor_def.name != "k8s_job_executor"
    # A backfill of a sharded source runs a run (hence a step pod) per partition on k8s, one run locally.
    for src in sharded:
        key = dg_key(["curated", src.name])
        assert repo.assets_defs_by_key[key].backfill_policy.max_partitions_per_run == 1
        assert local.assets_defs_by_key[key].backfill_policy.max_partitions_per_run is None


def test_k8s_trainer_passes_the_stage_pod_timeout_and_deletion(profile, monkeypatch):
    """K8sTrainer hands PipesK8sClient the stage's pod (from the trainer launch in the Pipes extras), the
    profile's namespace and multi-day pod_wait_timeout, and deletion on completion."""
    import dagster as dg
    from dagster_k8s import PipesK8sClient

    from lm_platform.defs.k8s_trainer import K8sTrainer

    seen = {}
    monkeypatch.setattr(PipesK8sClient, "run", lambda self, **kw: seen.update(kw))
    recipe = load_recipe("vi")

    class Ctx:
        asset_key = dg.AssetKey(["vi", "checkpoint", "eeve_4"])

    launch = TrainerLaunch("/data/lm_platform/j.json", 1, "eeve_4")
    K8sTrainer(profile, recipe).run(context=Ctx(), command=launch.command(), extras=launch.as_extras())
    assert seen["namespace"] == "lm-platform"
    assert seen["pod_wait_timeout"] == profile.pod_wait_timeout_seconds == 14 * 24 * 3600
    assert seen["delete_pod_on_completion"] is True
    assert seen["base_pod_spec"] == trainer_pod_spec(profile, recipe, launch)
    assert seen["base_pod_spec"]["containers"][0]["command"] == launch.command(profile.python)
    assert seen["extras"] == launch.as_extras()
    assert seen["base_pod_meta"]["labels"]["lm-platform.dev/stage"] == "eeve_4"
    with pytest.raises(ValueError, match="no trainer launch"):
        K8sTrainer(profile, recipe).run(context=Ctx(), command=["python", "x.py"])


def test_local_code_location_forks_steps_and_never_loads_the_kubernetes_client():
    """Locally each step process is forked from a server that imported Dagster and the platform once
    (not a fresh interpreter per step), and neither the code location nor a step loads `dagster_k8s`
    or the Kubernetes client: that import is for the k8s profile only."""
    code = (
        "import sys, json\n"
        "from lm_platform.definitions import defs\n"
        "ex = defs.executor\n"
        "print(json.dumps({'name': ex.name, 'config': ex.apply_config_mapping({}).value['config'],\n"
        "  'k8s': sorted(m for m in ('kubernetes', 'dagster_k8s') if m in sys.modules)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LM_PLATFORM_PROFILE"}
    out = (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=REPO
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    got = json.loads(out)
    assert got["name"] == "multiprocess_forkserver"
    assert got["config"]["start_method"]["forkserver"]["preload_modules"] == [
        "dagster",
        "lm_platform.defs.deployment",
    ]
    assert got["k8s"] == []
