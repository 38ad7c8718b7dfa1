"""Who reaches what on the cluster: the NetworkPolicies of deploy/k8s/base evaluated for every pair of
pod roles and ports against the intended matrix; the UI's authenticating proxy (an oauth2-proxy sidecar
of both webservers) and the read-only webserver in the Helm values; the local default."""

from __future__ import annotations

import copy
import functools
import inspect
import ipaddress
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field

import pytest
import yaml

from lm_platform.deployment.pods import LABEL_PREFIX, step_k8s_config, trainer_pod_labels
from lm_platform.deployment.profile import load_profile
from lm_platform.recipe import load_recipe
from lm_platform_tests.test_k8s_deploy import DEPLOY, REPO, validate

NAMESPACE = "lm-platform"
RELEASE = "dagster"  # the Helm release name of deploy/README.md's `helm upgrade --install dagster ...`
VALUES = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


@functools.cache
def _render() -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s" / "base")], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (kubectl kustomize renders deploy/k8s/base)")
    return copy.deepcopy(_render())


@pytest.fixture(scope="module")
def policies() -> list[dict]:
    """The NetworkPolicies as kustomize renders them; without kubectl, as written (this kustomization
    only sets their namespace and adds a metadata label, which changes nothing they select)."""
    if shutil.which("kubectl"):
        docs = copy.deepcopy(_render())
    else:
        raw = yaml.safe_load_all((DEPLOY / "k8s" / "base" / "networkpolicy.yaml").read_text())
        docs = [{**d, "metadata": {**d["metadata"], "namespace": NAMESPACE}} for d in raw if d]
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


# -- a NetworkPolicy evaluator (the semantics of networking.k8s.io/v1) ------------------------------


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: outside the cluster
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    ip: str = ""
    ports: tuple[tuple[int, str], ...] = ()  # what it listens on: (port, protocol)


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


NAMESPACE_LABELS = {
    NAMESPACE: {"kubernetes.io/metadata.name": NAMESPACE},
    "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
    "team-b": {"kubernetes.io/metadata.name": "team-b"},
}


def _peer_matches(peer: dict, policy_ns: str, ep: Endpoint, ipblock_matches_pods: bool) -> bool:
    if "ipBlock" in peer:
        if ep.namespace is not None and not ipblock_matches_pods:
            return False
        ip = ipaddress.ip_address(ep.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except") or []
        )
    if ep.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], NAMESPACE_LABELS[ep.namespace]):
            return False
    elif ep.namespace != policy_ns:
        return False
    return _selects(peer.get("podSelector") or {}, ep.labels)


def _port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if not isinstance(p.get("port", 0), int):
            raise AssertionError(f"named port {p['port']!r}: give numbers, the matrix is by number")
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p or p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def _allows(policies, direction, subject, peer, port, protocol, ipblock_matches_pods) -> bool:
    """Whether `subject`'s policies let `peer` through in `direction` (Ingress: peer -> subject;
    Egress: subject -> peer). Pods no policy isolates, and whatever is outside the namespace these
    policies govern, are not restricted by them."""
    if subject.namespace != NAMESPACE:
        return True
    mine = [
        p
        for p in policies
        if p["metadata"]["namespace"] == NAMESPACE
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not mine:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for pol in mine:
        for rule in pol["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers is not None and not any(
                _peer_matches(pr, NAMESPACE, peer, ipblock_matches_pods) for pr in peers
            ):
                continue
            if _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def reaches(policies, src: Endpoint, dst: Endpoint, port: int, protocol: str, ipblock_matches_pods: bool):
    return _allows(policies, "Egress", src, dst, port, protocol, ipblock_matches_pods) and _allows(
        policies, "Ingress", dst, src, port, protocol, ipblock_matches_pods
    )


# -- the pods of a deployment, labelled as their makers label them ------------------------------------


def _chart(component: str, **extra: str) -> dict[str, str]:
    # The official chart's pod labels: dagster.selectorLabels + `component` (templates/helpers/
    # _deployment-webserver.tpl, deployment-daemon.yaml, charts/dagster-user-deployments/.../deployment-user.yaml).
    return {
        "app.kubernetes.io/name": "dagster",
        "app.kubernetes.io/instance": RELEASE,
        "component": component,
        **extra,
    }


def _dagster_k8s_pod_labels(component: str, pod_template_spec_metadata: dict | None = None) -> dict[str, str]:
    """The pod labels dagster-k8s puts on a run (run_worker) or step (step_worker) Job's pod."""
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    config = DagsterK8sJobConfig(
        job_image="img", dagster_home="/opt/dagster/dagster_home", instance_config_map="i"
    )
    user = UserDefinedDagsterK8sConfig.from_dict(
        {"pod_template_spec_metadata": pod_template_spec_metadata or {}}
    )
    job = construct_dagster_k8s_job(
        config, ["x"], "dagster-job-x", component=component, user_defined_k8s_config=user
    )
    return dict(job.spec.template.metadata.labels)


def _endpoints() -> dict[str, Endpoint]:
    profile = load_profile(str(DEPLOY / "k8s" / "base" / "profile.yaml"))
    recipe = load_recipe("vi")
    ui_port = VALUES["dagsterWebserver"]["service"]["port"]
    (proxy,) = VALUES["dagsterWebserver"]["extraContainers"]
    proxy_port = next(p["containerPort"] for p in proxy["ports"] if p["name"] == "oauth2-proxy")
    code_port = VALUES["dagster-user-deployments"]["deployments"][0]["port"]
    deployment = VALUES["dagster-user-deployments"]["deployments"][0]["name"]
    step_meta = step_k8s_config(profile, ["vi", "checkpoint", "main"])["pod_template_spec_metadata"]
    ui_ports = ((ui_port, "TCP"), (proxy_port, "TCP"))
    eps = [
        Endpoint("webserver", NAMESPACE, _chart("dagster-webserver"), "10.1.0.1", ui_ports),
        Endpoint(
            "webserver-read-only", NAMESPACE, _chart("dagster-webserver-read-only"), "10.1.0.2", ui_ports
        ),
        Endpoint("daemon", NAMESPACE, _chart("dagster-daemon", deployment="daemon"), "10.1.0.3"),
        Endpoint(
            "code-location",
            NAMESPACE,
            _chart("user-deployments", deployment=deployment),
            "10.1.0.4",
            ((code_port, "TCP"),),
        ),
        Endpoint("run-worker", NAMESPACE, _dagster_k8s_pod_labels("run_worker"), "10.1.0.5"),
        Endpoint("step", NAMESPACE, _dagster_k8s_pod_labels("step_worker", step_meta), "10.1.0.6"),
        Endpoint("trainer", NAMESPACE, trainer_pod_labels(profile, recipe, "main"), "10.1.0.7"),
        # The chart's bundled PostgreSQL (bitnami postgresql 8.1.0: app, release, role).
        Endpoint(
            "postgres",
            NAMESPACE,
            {"app": "postgresql", "release": RELEASE, "role": "master"},
            "10.1.0.8",
            ((5432, "TCP"),),
        ),
        # Anything else someone starts in the namespace (`kubectl run`, a notebook...).
        Endpoint("other-pod", NAMESPACE, {"run": "debug", **profile.labels}, "10.1.0.9"),
        Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, "10.2.0.10", ((53, "UDP"), (53, "TCP"))),
        Endpoint("other-namespace", "team-b", {"app": "something"}, "10.3.0.1"),
        # Outside the cluster: a browser, the hub, the identity provider, the API server's endpoint.
        Endpoint("outside", None, {}, "203.0.113.7", ((443, "TCP"), (6443, "TCP"))),
    ]
    return {e.name: e for e in eps}


# deploy/README.md's "Who reaches what" table, read as the intended matrix: its columns and rows name
# these destinations (port, protocol) and sources.
COLUMNS = {
    "Postgres 5432": [("postgres", 5432, "TCP")],
    "code location 3030": [("code-location", None, "TCP")],  # the port of the values' code locations
    "UI proxy 4180": [("webserver", 4180, "TCP"), ("webserver-read-only", 4180, "TCP")],
    "webserver 80": [("webserver", 80, "TCP"), ("webserver-read-only", 80, "TCP")],
    "DNS 53": [("kube-dns", 53, "UDP"), ("kube-dns", 53, "TCP")],
    "HTTPS out 443": [("outside", 443, "TCP")],
    "Kubernetes API 6443": [("outside", 6443, "TCP")],
}
ROWS = {
    "webserver": ["webserver"],
    "read-only webserver": ["webserver-read-only"],
    "daemon": ["daemon"],
    "code location": ["code-location"],
    "run worker": ["run-worker"],
    "step": ["step"],
    "trainer": ["trainer"],
    "Postgres, any other pod of the namespace": ["postgres", "other-pod"],
    "other namespaces, outside the cluster": ["other-namespace", "outside"],
}


def _intended(code_port: int) -> set[tuple[str, str, int, str]]:
    text = (DEPLOY / "README.md").read_text()
    section = text.split("\n## Who reaches what\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "from \\ to" and header[1:] == list(COLUMNS), header
    out, rows = set(), set()
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.add(cells[0])
        for column, cell in zip(header[1:], cells[1:], strict=True):
            if cell.startswith("yes"):
                for src in ROWS[cells[0]]:
                    out |= {(src, dst, port or code_port, proto) for dst, port, proto in COLUMNS[column]}
            else:
                assert cell == "", f"README cell {cells[0]!r} x {column!r}: {cell!r} (yes... or empty)"
    assert rows == set(ROWS), rows
    return out


@pytest.mark.parametrize(
    "ipblock_matches_pods", [False, True], ids=["ipblock-outside-only", "ipblock-pods-too"]
)
def test_network_policies_allow_exactly_the_intended_matrix(policies, ipblock_matches_pods):
    """Every source x every listening port: what the policies allow equals deploy/README.md's table.
    Whether an ipBlock also matches pod addresses is up to the network plugin; it holds either way."""
    eps = _endpoints()
    allowed = set()
    for src in eps.values():
        if src.name == "kube-dns":
            continue
        for dst in eps.values():
            if dst is src or NAMESPACE not in (src.namespace, dst.namespace):
                continue  # what these policies do not govern
            for port, proto in dst.ports:
                if reaches(policies, src, dst, port, proto, ipblock_matches_pods):
                    allowed.add((src.name, dst.name, port, proto))
    intended = _intended(eps["code-location"].ports[0][0])
    assert allowed - intended == set(), f"allowed but not intended: {sorted(allowed - intended)}"
    assert intended - allowed == set(), f"intended but not allowed: {sorted(intended - allowed)}"
    # In words: the UI is reached only through the proxy; Postgres only by Dagster's own processes.
    ui_port = VALUES["dagsterWebserver"]["service"]["port"]
    assert not any(d == "webserver" and p == ui_port for _, d, p, _ in allowed)
    assert {s for s, d, _, _ in allowed if d == "postgres"} == {
        "webserver",
        "webserver-read-only",
        "daemon",
        "code-location",
        "run-worker",
        "step",
    }


def test_evaluator_sees_a_wrong_policy(policies):
    """The evaluator is not vacuous: opening Postgres to every pod of the namespace shows up."""
    eps = _endpoints()
    assert not reaches(policies, eps["trainer"], eps["postgres"], 5432, "TCP", True)
    opened = [
        {**p, "spec": {**p["spec"], "ingress": [{"ports": [{"protocol": "TCP", "port": 5432}]}]}}
        if p["metadata"]["name"] == "postgres"
        else p
        for p in policies
    ]
    opened.append(
        {
            "metadata": {"name": "trainer-db", "namespace": NAMESPACE},
            "spec": {
                "podSelector": {"matchLabels": {f"{LABEL_PREFIX}/component": "trainer"}},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": 5432}]}],
            },
        }
    )
    assert reaches(opened, eps["trainer"], eps["postgres"], 5432, "TCP", True)


def test_policies_render_validate_and_deny_by_default(rendered):
    pols = [d for d in rendered if d["kind"] == "NetworkPolicy"]
    for doc in pols:
        validate(doc)
        assert doc["metadata"]["namespace"] == NAMESPACE
    by_name = {p["metadata"]["name"]: p for p in pols}
    deny = by_name["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    # Every role policy isolates both directions, so a rule left out means "denied", not "open".
    for name, pol in by_name.items():
        if name != "allow-dns":
            assert set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"}, name
    # The rules to addresses outside the cluster come in two shapes, each alike wherever it is used,
    # so narrowing one (deploy/README.md) is one search-and-replace.
    outside = [
        r
        for p in pols
        for r in p["spec"].get("egress") or []
        if any("ipBlock" in t for t in r.get("to") or [])
    ]
    shapes = {yaml.safe_dump(r, sort_keys=True) for r in outside}
    assert len(shapes) == 2, shapes
    assert {tuple(sorted(p["port"] for p in r["ports"])) for r in outside} == {(443,), (443, 6443)}


def test_dagster_k8s_still_labels_run_pods_run_worker():
    """The run-worker policy selects dagster-k8s's label; an upgrade that renames it must fail here."""
    from dagster_k8s.launcher import K8sRunLauncher

    assert 'component="run_worker"' in inspect.getsource(K8sRunLauncher._launch_k8s_job_with_args)


# -- the UI: oauth2-proxy sidecar and the read-only webserver -------------------------------------------


def _ui_pod(component: str) -> dict:
    """The webserver pod as the chart builds it from these values (containers: the webserver, then
    dagsterWebserver.extraContainers; volumes: the chart's, then dagsterWebserver.volumes)."""
    web = VALUES["dagsterWebserver"]
    port = web["service"]["port"]
    cmd = f"dagster-webserver -h 0.0.0.0 -p {port} -w /dagster-workspace/workspace.yaml"
    if component.endswith("-read-only"):
        cmd += " --read-only"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": component, "labels": _chart(component)},
        "spec": {
            "containers": [
                {
                    "name": "dagster",
                    "image": "docker.io/dagster/dagster-celery-k8s:1.13.27",
                    "command": ["/bin/bash", "-c", cmd],
                    "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                },
                *web["extraContainers"],
            ],
            "volumes": [
                {"name": "dagster-instance", "configMap": {"name": "dagster-instance"}},
                *web["volumes"],
            ],
        },
    }


def _resolve(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def test_ui_is_behind_oauth2_proxy_with_a_read_only_twin(rendered):
    web = VALUES["dagsterWebserver"]
    assert web["enableReadOnly"] is True
    (proxy,) = web["extraContainers"]
    assert proxy["image"].startswith("quay.io/oauth2-proxy/oauth2-proxy:v7.")
    configmaps = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Secret"}
    services = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Service"}
    # Secrets reach the sidecar by reference only, from the Secret template rendered here.
    for env in proxy["env"]:
        assert "value" not in env, f"{env['name']} has a plain value"
        ref = env["valueFrom"].get("secretKeyRef")
        if ref:
            assert ref["key"] in secrets[ref["name"]]["stringData"]
    secret_envs = {e["name"] for e in proxy["env"] if "secretKeyRef" in e["valueFrom"]}
    assert {
        "OAUTH2_PROXY_CLIENT_ID",
        "OAUTH2_PROXY_CLIENT_SECRET",
        "OAUTH2_PROXY_COOKIE_SECRET",
    } <= secret_envs
    (proxy_port,) = [p for p in proxy["ports"] if p["name"] == "oauth2-proxy"]
    mounts = {m["mountPath"]: m["name"] for m in proxy["volumeMounts"]}
    volumes = {v["name"]: v for v in web["volumes"]}

    settings = {}
    for component in ("dagster-webserver", "dagster-webserver-read-only"):
        pod = _ui_pod(component)
        validate(pod)
        # The sidecar's environment as the kubelet resolves it in this pod, then its --config path.
        env = {}
        for e in proxy["env"]:
            field_path = e["valueFrom"].get("fieldRef", {}).get("fieldPath", "")
            m = re.fullmatch(r"metadata\.labels\['(.+)'\]", field_path)
            if m:
                env[e["name"]] = pod["metadata"]["labels"][m[1]]
        (config_arg,) = [a for a in proxy["args"] if a.startswith("--config=")]
        path = _resolve(config_arg.removeprefix("--config="), env)
        directory, filename = path.rsplit("/", 1)
        cm_name = volumes[mounts[directory]]["configMap"]["name"]
        assert filename in configmaps[cm_name]["data"], f"{component}: {path} is not in ConfigMap {cm_name}"
        cfg = tomllib.loads(configmaps[cm_name]["data"][filename])
        settings[component] = cfg
        # The proxy listens on its container port and forwards to the webserver in the same pod.
        assert cfg["http_address"].rsplit(":", 1)[1] == str(proxy_port["containerPort"])
        assert cfg["upstreams"] == [f"http://127.0.0.1:{web['service']['port']}/"]
        assert cfg["provider"] == "oidc" and cfg["cookie_secure"] is True
        # The entry Service of this UI targets the proxy, never the webserver's port.
        (svc,) = [s for s in services.values() if s["spec"]["selector"].get("component") == component]
        validate(svc)
        assert svc["spec"]["selector"] == {k: v for k, v in pod["metadata"]["labels"].items()}
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["oauth2-proxy"]
    # The issuer URL comes from the same ConfigMap (one place to name the identity provider).
    issuer = [e for e in proxy["env"] if e["name"] == "OAUTH2_PROXY_OIDC_ISSUER_URL"][0]["valueFrom"]
    assert issuer["configMapKeyRef"]["key"] in configmaps[issuer["configMapKeyRef"]["name"]]["data"]
    operator, viewer = settings["dagster-webserver"], settings["dagster-webserver-read-only"]
    assert operator["allowed_groups"] == ["lm-platform-operators"]
    assert set(viewer["allowed_groups"]) == {"lm-platform-viewers", "lm-platform-operators"}
    assert operator["cookie_name"] != viewer["cookie_name"]


def test_readme_says_who_can_do_what():
    text = (DEPLOY / "README.md").read_text()
    section = text.split("## Who can do what", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().strip("*") for line in section.splitlines() if line.startswith("| ")}
    assert {"viewer", "operator", "cluster admin"} <= rows
    for group in ("lm-platform-viewers", "lm-platform-operators"):
        assert group in section
    assert f"helm upgrade --install {RELEASE} " in text


def test_local_ui_stays_on_loopback():
    """`make ui` keeps serving the UI on 127.0.0.1 only, and the README says so."""
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nui:", 1)[1].split("\n\n", 1)[0]
    assert "-h 127.0.0.1" in recipe
    assert "127.0.0.1" in (REPO / "README.md").read_text().split("## Using it", 1)[1]


def test_example_ingress_validates_and_routes_only_to_the_proxies():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "examples" / "ui-ingress.yaml").read_text()) if d]
    backends = set()
    for doc in docs:
        validate(doc)
        for rule in doc["spec"]["rules"]:
            backends |= {p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert backends == {"lm-platform-ui", "lm-platform-ui-read-only"}
