"""Shared fixtures. `demo_run` materializes the whole demo graph once per session through the CLI,
exactly as `make demo` does, into a temporary instance and storage root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")


@dataclass(frozen=True)
class DemoRun:
    home: Path
    storage: Path
    env: dict[str, str]

    @property
    def base(self) -> Path:
        return self.storage / "demo"

    def dagster(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [DAGSTER, *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def demo_step(self, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
        """One of `make demo`'s runs: the missing or stale assets of a selection (`defs.plan --run`)."""
        return subprocess.run(
            [sys.executable, "-m", "lm_platform.defs.plan", "--run", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))


def isolated_env(home: Path, storage: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    storage.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.setdefault("OMP_NUM_THREADS", "1")  # as the Makefile sets it for `make demo`
    env.update(
        DAGSTER_HOME=str(home),
        LM_PLATFORM_STORAGE=str(storage),
        LM_PLATFORM_RECIPE="demo",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


# `make demo`'s runs, each of the missing or stale assets of its selection (`lm_platform.defs.plan --run`):
# everything but the evaluations and the export, the benchmarks of the last stage and of the exported
# version (partitions registered by the first run), the leaderboard and the export.
DEMO_VERSION = "anneal"
EXPORTED_VERSION = "merged/final"
DEMO_STEPS = (
    ('not group:evaluation and not group:mixture_search and not key:"export/*"',),
    ('group:evaluation and not key:"eval/leaderboard"', "--partition", DEMO_VERSION),
    ('group:evaluation and not key:"eval/leaderboard"', "--partition", EXPORTED_VERSION),
    ('key:"eval/leaderboard" or key:"export/*"',),
)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    root = tmp_path_factory.mktemp("demo_run")
    run = DemoRun(root / "home", root / "data", isolated_env(root / "home", root / "data"))
    for step in DEMO_STEPS:
        proc = run.demo_step(*step)
        if proc.returncode != 0:
            pytest.fail(
                f"demo materialization {step} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
            )
    return run


def write_demo_variant(tmp_path: Path, mutate, name: str = "variant.yaml") -> Path:
    """The bundled demo recipe with absolute data paths, changed by `mutate(raw)`, written to tmp_path."""
    import yaml

    from lm_platform.recipe.loader import BUNDLED_DIR

    raw = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text(encoding="utf-8"))
    for stage in raw["stages"]:  # the demo's mixture search: a variant that wants it sets it in `mutate`
        stage.pop("mixture_search", None)
    for src in raw["sources"]:
        src["location"] = str(BUNDLED_DIR / src["location"])
    for ev in raw["evaluations"]:
        for key in ("location", "dev_location", "include_path"):
            if ev.get(key):
                ev[key] = str(BUNDLED_DIR / ev[key])
    for ins in (raw.get("finetune") or {}).get("instructions", []):
        ins["location"] = str(BUNDLED_DIR / ins["location"])
    mutate(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def demo_recipe():
    from lm_platform.recipe import load_recipe

    return load_recipe("demo")


# The test files that read the materialized demo (the session fixture `demo_run`). `make test` runs two
# pytest-xdist workers; all of these go to one of them, so the demo is materialized once.
DEMO_FILES = frozenset({"test_browser.py", "test_demo_graph.py"})


def pytest_collection_modifyitems(config, items) -> None:
    outside = sorted({item.path.name for item in items if "demo_run" in getattr(item, "fixturenames", ())})
    outside = [name for name in outside if name not in DEMO_FILES]
    if outside:
        raise pytest.UsageError(f"conftest.DEMO_FILES must list every file that uses demo_run: add {outside}")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist: each test file whole in one worker (its module fixtures, servers and clusters
    started once), and the demo's readers together (xdist's own `loadgroup` cannot group across files
    under pytest 9.2, whose node ids it no longer rewrites)."""
    from xdist.scheduler import LoadScopeScheduling

    class DemoScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "demo_run" if Path(path).name in DEMO_FILES else path

    return DemoScheduling(config, log)
