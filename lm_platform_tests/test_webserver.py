"""Starts `dagster-webserver` on the demo code location and checks the asset graph it serves over
GraphQL: the keys, a few dependency edges, groups and kinds. Nothing is materialized."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from lm_platform_tests.conftest import REPO, isolated_env
from lm_platform_tests.test_demo_graph import DEMO_KEYS

WEBSERVER = str(Path(sys.executable).parent / "dagster-webserver")
STARTUP_TIMEOUT_S = 120.0

SOURCES = ["vi_news", "ja_wiki", "en_books", "en_web"]
# Every asset of the demo graph (test_demo_graph keeps the list).
EXPECTED_KEYS = DEMO_KEYS

ASSET_NODES_QUERY = """
query AssetGraph {
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    groupName
    kinds
  }
}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_output(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-8000:]
    except OSError:
        return "<no output captured>"


def _wait_until_up(proc: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{_server_output(log)}")
        try:
            if requests.get(f"{base}/server_info", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1.0)
    pytest.fail(f"dagster-webserver not up after {STARTUP_TIMEOUT_S:.0f}s:\n{_server_output(log)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_webserver_serves_demo_asset_graph(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home", tmp_path / "data")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "webserver.log"

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [WEBSERVER, "-m", "lm_platform.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(proc, base, log)

        resp = requests.post(f"{base}/graphql", json={"query": ASSET_NODES_QUERY}, timeout=60)
        assert resp.status_code == 200, resp.text[:4000]
        payload = resp.json()
        assert not payload.get("errors"), payload["errors"]
        nodes = payload["data"]["assetNodes"]

        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert len(by_key) == len(nodes), "duplicate asset keys in assetNodes"
        assert set(by_key) == EXPECTED_KEYS

        deps = {key: {"/".join(d["path"]) for d in n["dependencyKeys"]} for key, n in by_key.items()}
        assert "deduped/vi_news" in deps["tokenizer"]  # extend mode learns from the target language's text
        assert {"tokenizer", "tokens/vi_news"} <= deps["blend/main"]
        assert {"checkpoint/main", "dataset/anneal", "tokenizer"} <= deps["checkpoint/anneal"]
        assert {"checkpoint/main", "checkpoint/anneal"} <= deps["model_versions"]
        assert "model_versions" in deps["eval/perplexity"]
        assert {"curated/en_web", "exact_dedup/en_books"} <= deps["exact_dedup/en_web"]
        assert {"exact_dedup/en_web", "near_duplicates"} <= deps["deduped/en_web"]
        assert {"blend/main", "tokenizer"} <= deps["dataset/main"]
        assert {"dataset/main", "tokenizer"} <= deps["checkpoint/main"]
        assert deps["reference_lm/en"] == {"corpus/en_books"}
        # en_web is scored by the English quality model, trained on en_books (positives) and en_web.
        assert {"corpus/en_web", "reference_lm/en", "quality_model/en"} == deps["curated/en_web"]
        assert deps["quality_model/en"] == {"corpus/en_books", "corpus/en_web"}
        for src in SOURCES:
            assert f"corpus/{src}" in deps[f"curated/{src}"]
            assert f"curated/{src}" in deps[f"exact_dedup/{src}"]
            assert f"minhash/{src}" in deps["near_duplicates"]
            assert deps[f"corpus/{src}"] == set()

        groups = {key: n["groupName"] for key, n in by_key.items()}
        assert groups["tokenizer"] == "tokenizer"
        assert groups["checkpoint/main"] == "training"
        assert groups["checkpoint/anneal"] == "training"
        assert groups["eval/perplexity"] == "evaluation"
        assert all(groups[f"corpus/{src}"] == "corpus" for src in SOURCES)
        assert all(groups[f"deduped/{src}"] == "dedup" for src in SOURCES)  # with the other dedup assets
        assert all(g and g != "default" for g in groups.values()), groups

        assert set(by_key["tokenizer"]["kinds"]) == {"huggingface"}  # the demo extends an HF BPE (EEVE)
        assert all(n["kinds"] for n in nodes), "every asset should declare kinds"
    finally:
        _stop(proc)
