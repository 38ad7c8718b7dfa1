"""What the Kubernetes profile wires into the assets: the exact-dedup index worked on as a local copy and
published atomically, and a preempted trainer (exit 75) retried."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest

from lm_platform.data.local_index import GENERATION_FILE
from lm_platform.defs import training as training_defs
from lm_platform.defs.assets import build_assets
from lm_platform.defs.deployment import build_deployment_definitions
from lm_platform.defs.resources import LMStorage
from lm_platform.deployment.profile import Profile
from lm_platform_tests.test_dedup_assets import make_recipe


def _exact_dedup(tmp_path: Path, storage: LMStorage) -> dg.ExecuteInProcessResult:
    recipe = make_recipe(tmp_path)
    return dg.materialize(
        build_assets(recipe),
        resources={"storage": storage, "trainer": dg.PipesSubprocessClient()},
        selection=dg.AssetSelection.assets(dg.AssetKey(["exact_dedup", "web"])).upstream(),
        instance=dg.DagsterInstance.ephemeral(),
    )


def test_k8s_storage_publishes_the_exact_index_from_a_local_copy(tmp_path, monkeypatch):
    k8s = Profile(kind="k8s", image="lm:1", storage={"pvc": "lm-data", "mount_path": str(tmp_path / "data")})
    storage = build_deployment_definitions(make_recipe(tmp_path), k8s, prefix=[]).resources["storage"]
    assert storage.local_index
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    _exact_dedup(tmp_path, storage)
    index = tmp_path / "data" / "small" / "dedup" / "exact_index"
    copies = list(index.parent.glob(".exact_index.*"))
    # Published (the generation marker of the copy that replaced it), no staging left, scratch cleaned.
    assert (index / GENERATION_FILE).is_file() and copies == []
    assert any(p.suffix in {".sqlite", ".db", ""} for p in index.iterdir() if p.name != GENERATION_FILE)
    assert list((tmp_path / "scratch").glob("lm-index-*")) == []


def test_local_storage_works_on_the_index_in_place(tmp_path):
    _exact_dedup(tmp_path, LMStorage(root=str(tmp_path / "data")))
    index = tmp_path / "data" / "small" / "dedup" / "exact_index"
    assert index.is_dir() and not (index / GENERATION_FILE).exists()


def _train_with_exit(tmp_path, monkeypatch, demo_recipe, status: int) -> tuple[bool, int]:
    """The checkpoint asset with a trainer command that records its start and exits with `status`."""
    attempts = tmp_path / "attempts"
    script = f"open({str(attempts)!r}, 'a').write('x'); import sys; sys.exit({status})"
    monkeypatch.setattr(training_defs, "trainer_command", lambda *a, **k: [sys.executable, "-c", script])
    monkeypatch.setattr(training_defs, "make_job", lambda *a, **k: Profile())  # any pydantic model
    monkeypatch.setattr(training_defs, "PREEMPTION_RETRY_WAIT_S", 0)
    stage = demo_recipe.stages[0].name
    run = dg.materialize(
        build_assets(demo_recipe),
        selection=dg.AssetSelection.assets(dg.AssetKey(["checkpoint", stage])),
        resources={"storage": LMStorage(root=str(tmp_path)), "trainer": dg.PipesSubprocessClient()},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    return run.success, len(attempts.read_text()) if attempts.exists() else 0


def test_preempted_trainer_exit_75_is_retried(tmp_path, monkeypatch, demo_recipe):
    ok, attempts = _train_with_exit(tmp_path, monkeypatch, demo_recipe, 75)
    assert not ok
    assert attempts == 1 + training_defs.PREEMPTION_RETRIES


def test_other_trainer_failures_are_not_retried(tmp_path, monkeypatch, demo_recipe):
    ok, attempts = _train_with_exit(tmp_path, monkeypatch, demo_recipe, 1)
    assert not ok and attempts == 1


@pytest.mark.parametrize(
    "message, hit",
    [
        ("External execution process failed with code 75", True),
        ('Container "trainer": Terminated with exit code 75: Error', True),
        ("External execution process failed with code 175", False),
        ("External execution process failed with code 1", False),
    ],
)
def test_preemption_is_recognised_by_the_exit_status(message, hit):
    from lm_platform.training.job import PREEMPTED_EXIT_CODE, preempted

    assert preempted(message) is hit
    assert PREEMPTED_EXIT_CODE == 75
