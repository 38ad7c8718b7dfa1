"""Several recipes in one instance (one code location each, keys under the recipe's name) and the `dg`
CLI on this project (`dg check defs`, `dg launch --assets ...`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def test_two_recipe_workspace_has_distinct_keys(tmp_path):
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module: {module_name: lm_platform.defs.locations, attribute: vi, location_name: vi}\n"
        "  - python_module: {module_name: lm_platform.defs.locations, attribute: ja, location_name: ja}\n"
    )
    with (
        dg.instance_for_test() as instance,
        WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(workspace)])) as ctx,
    ):
        request = ctx.create_request_context()
        errors = {
            name: e.load_error for name, e in request.get_code_location_entries().items() if e.load_error
        }
        assert not errors, errors
        graph = request.asset_graph
        keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
        vi = {k for k in keys if k.startswith("vi/")}
        ja = {k for k in keys if k.startswith("ja/")}
        assert "vi/tokenizer" in vi and "ja/tokenizer" in ja and "tokenizer" not in keys
        assert vi and ja and vi | ja == keys, "every key is under its recipe's prefix"
        # Dependencies stay inside their location: vi's dataset depends on vi's tokenizer.
        parents = {p.to_user_string() for p in graph.get(dg.AssetKey(["vi", "dataset", "main"])).parent_keys}
        assert {"vi/blend/main", "vi/tokenizer"} <= parents
        assert {p for p in parents if not p.startswith("vi/tokens/")} == {"vi/blend/main", "vi/tokenizer"}
        # The CLI selections of the README, in both forms.
        from dagster._core.definitions.asset_selection import AssetSelection

        picked = {k.to_user_string() for k in AssetSelection.from_string("key:vi/tokenizer+").resolve(graph)}
        assert (
            "vi/tokenizer" in picked
            and "vi/dataset/main" in picked
            and not any(p.startswith("ja/") for p in picked)
        )


def test_single_recipe_keys_are_unprefixed_and_tokenizer_plus_selects_its_children(demo_recipe):
    from dagster._core.definitions.asset_selection import AssetSelection

    from lm_platform.defs.deployment import build_deployment_definitions
    from lm_platform.deployment.profile import Profile

    graph = build_deployment_definitions(demo_recipe, Profile(), prefix=[]).get_repository_def().asset_graph
    picked = {k.to_user_string() for k in AssetSelection.from_string("tokenizer+").resolve(graph)}
    # Its children: each source's tokens, the blends (exact counts), the datasets, and the checkpoints
    # (which read the tokenizer for samples).
    assert picked == {
        "tokenizer",
        "dataset/main",
        "dataset/anneal",
        "checkpoint/main",
        "checkpoint/anneal",
    } | {f"tokens/{s.name}" for s in demo_recipe.sources} | {"blend/main", "blend/anneal"}


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "DAGSTER_HOME": str(home),
        "LM_PLATFORM_STORAGE": str(tmp_path / "data"),
        "LM_PLATFORM_PROFILE": "local",
    }


def test_dg_check_defs_and_dg_launch(tmp_path):
    env = _env(tmp_path)
    check = subprocess.run(
        [str(BIN / "dg"), "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    launch = subprocess.run(
        [str(BIN / "dg"), "launch", "--assets", "key:corpus/vi_news"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
    assert (tmp_path / "data" / "demo" / "corpus" / "vi_news.parquet").is_file()
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    assert instance.get_latest_materialization_event(dg.AssetKey(["corpus", "vi_news"])) is not None


def test_dg_dev_serves_the_project(tmp_path):
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(BIN / "dg"), "dev", "-p", str(port), "-h", "127.0.0.1"],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, info = time.monotonic() + 400, None
        while time.monotonic() < deadline and info is None and proc.poll() is None:
            time.sleep(3)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as r:
                    info = r.read().decode()
            except OSError:
                pass
        assert info is not None and '"dagster_version"' in info, "dg dev did not serve the UI"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
