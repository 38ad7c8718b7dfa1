"""A real browser on the Dagster UI of the materialized demo: Debian's Chromium driven by Playwright.

The demo (the session's `demo_run`) is served by `dagster dev` (webserver and daemon, which runs the
queued launches) on loopback. The test opens the asset graph, launches a materialization of an
`eval/<benchmark>` asset for one model version and of `corpus/en_books` from the UI, waits for both runs
to succeed, then opens the assets and checks that their metadata shows: the curation funnel, the
tokenizer's fertility and the benchmark's score. Screenshots are kept under the test's output directory
(`browser_screenshots/`, also printed).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from lm_platform_tests.conftest import REPO
from lm_platform_tests.test_webserver import _free_port, _stop, _wait_until_up

CHROMIUM = "/usr/bin/chromium"
DAGSTER = str(Path(sys.executable).parent / "dagster")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BENCHMARK = "exam_vi"
VERSION = "anneal"
RUN_TIMEOUT_S = 600

RUNS_QUERY = """
query Runs { runsOrError(limit: 20) { ... on Runs { results { runId status assetSelection { path } tags { key value } } } } }
"""


def _runs(base: str) -> list[dict]:
    resp = requests.post(f"{base}/graphql", json={"query": RUNS_QUERY}, timeout=60)
    resp.raise_for_status()
    return resp.json()["data"]["runsOrError"]["results"]


def _wait_for_runs(base: str, keys: set[str], shots, earlier: set[str]) -> None:
    """Until a run of each asset key launched since (not one of the `earlier` run ids: the demo's own
    runs selected these keys too) has succeeded; fails on a failed run."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        done = set()
        for run in _runs(base):
            if run["runId"] in earlier:
                continue
            selected = {"/".join(k["path"]) for k in run["assetSelection"] or []}
            for key in keys & selected:
                if run["status"] in ("FAILURE", "CANCELED"):
                    shots("run_failed")
                    pytest.fail(f"the run of {key} ended {run['status']} (run {run['runId']})")
                if run["status"] == "SUCCESS":
                    done.add(key)
        if done == keys:
            return
        time.sleep(3)
    shots("runs_timeout")
    pytest.fail(f"runs of {sorted(keys)} did not succeed within {RUN_TIMEOUT_S}s")


@pytest.mark.slow
def test_browser_launches_and_shows_scores(demo_run, tmp_path: Path, request) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"{CHROMIUM} is missing: `make install` installs Debian's chromium (scripts/install_chromium.sh)"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is a dev dependency")

    shots_dir = tmp_path / "browser_screenshots"
    shots_dir.mkdir()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster_dev.log"
    env = {**demo_run.env, "LM_PLATFORM_EVAL_SCHEDULE": "stopped"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [DAGSTER, "dev", "-m", "lm_platform.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    try:
        _wait_until_up(proc, base, log)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 900},
            )
            # The instance turns Dagster's first-run dialog off (dagster.yaml: nux); the browser also
            # remembers it as dismissed, as it would after one click on "Skip".
            browser.add_init_script("window.localStorage.setItem('communityNux', '1');")
            page = browser.new_page()
            page.set_default_timeout(120_000)
            step = iter(range(100))

            def shot(name: str) -> None:
                page.screenshot(path=str(shots_dir / f"{next(step):02d}_{name}.png"), full_page=True)

            # Dagster's first-run "Join the Dagster community" dialog may appear over any page.
            community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
            page.add_locator_handler(community, lambda d: d.get_by_role("button", name="Skip").click())
            # "Are you sure?" when an upstream asset was never materialized: go on.
            sure = page.get_by_role("dialog").filter(has_text="Are you sure?")
            page.add_locator_handler(sure, lambda d: d.get_by_role("button", name="Confirm").click())

            page.goto(f"{base}/asset-groups")  # the global asset graph, collapsed to its groups
            page.get_by_text("Global asset lineage").wait_for()
            for group in ("corpus", "training", "evaluation"):
                page.get_by_text(group, exact=True).first.wait_for()
            shot("asset_graph")

            earlier = {run["runId"] for run in _runs(base)}  # the demo's runs, before the UI launches any
            # eval/<benchmark> for one model version: the partition dialog of a dynamic partitions asset.
            page.goto(f"{base}/assets/eval/{BENCHMARK}")
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
            for attempt in range(3):  # the button ignores clicks while it loads the partitions
                page.get_by_role("button", name="Materialize…").click()
                try:
                    dialog.get_by_text("Select a partition or create one").wait_for(timeout=30_000)
                    break
                except Exception:
                    if attempt == 2:
                        raise
            dialog.get_by_text("Select a partition or create one").click()
            page.get_by_role("menuitem").filter(has_text=VERSION).first.click()
            dialog.get_by_text("Launch runs to materialize").click()  # closes the partition list
            shot("launch_eval")
            dialog.get_by_role("button", name="Launch 1 run").click()
            dialog.wait_for(state="hidden")

            # corpus/en_books: an unpartitioned asset launches directly.
            page.goto(f"{base}/assets/corpus/en_books")
            page.get_by_role("button").filter(has_text=re.compile(r"^Materialize$")).first.click()
            shot("launch_corpus")
            _wait_for_runs(base, {f"eval/{BENCHMARK}", "corpus/en_books"}, shot, earlier)
            page.goto(f"{base}/runs")
            page.get_by_text("Success").first.wait_for()
            shot("runs")

            page.goto(f"{base}/assets/eval/{BENCHMARK}?partition={VERSION}")
            metadata = page.get_by_role("table").filter(has_text="per_subject")
            metadata.wait_for()
            for key in ("score", "stderr", "n", "previous_version", "tokens_seen"):
                assert metadata.get_by_role("cell", name=key, exact=True).count() >= 1, key
            assert metadata.get_by_text(VERSION, exact=True).count() >= 1
            shot("eval_metadata")

            page.goto(f"{base}/assets/curated/en_books")
            page.get_by_role("cell", name="funnel", exact=True).first.wait_for()
            shot("curated_funnel")

            page.goto(f"{base}/assets/tokenizer")
            page.get_by_role("cell", name="fertility", exact=True).first.wait_for()
            shot("tokenizer_fertility")

            page.goto(f"{base}/assets/corpus/en_books")
            page.get_by_role("cell", name="docs", exact=True).first.wait_for()
            shot("corpus")
            browser.close()
    finally:
        _stop(proc)
        with contextlib.suppress(ProcessLookupError):  # dagster dev's servers share its session
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)
        keep = Path(request.config.rootpath) / "test-output" / "browser_screenshots"
        if any(shots_dir.iterdir()):
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(shots_dir, keep)
            print(f"screenshots: {keep}")
