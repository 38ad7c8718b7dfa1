"""What the Kubernetes profile wires into the assets: the exact-dedup index worked on as a local copy and
published atomically, and a preempted trainer (exit 75) retried."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest

from lm_platform.data.dedup.local_index import GENERATION_FILE
from lm_platform.defs import resources as resources_defs
from lm_platform.defs import training as training_defs
from lm_platform.defs.assets import build_assets
from lm_platform.defs.deployment import build_deployment_definitions
from lm_platform.defs.resources import LMStorage
from lm_platform.deployment.profile import Profile
from lm_platform.training.contract import TrainerLaunch
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
    monkeypatch.setattr(TrainerLaunch, "command", lambda self, *a: [sys.executable, "-c", script])
    monkeypatch.setattr(training_defs, "make_job", lambda *a, **k: Profile())  # any pydantic model
    monkeypatch.setattr(resources_defs, "PREEMPTION_RETRY_WAIT_S", 0)
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
    assert attempts == 1 + resources_defs.PREEMPTION_RETRIES


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
    from lm_platform.training.contract import PREEMPTED_EXIT_CODE, preempted

    assert preempted(message) is hit
    assert PREEMPTED_EXIT_CODE == 75


def test_preemption_message_is_the_trainers():
    from lm_platform.training import launch, train
    from lm_platform.training.contract import PREEMPTED_EXIT_CODE, PREEMPTED_MESSAGE, preempted

    # One definition: the trainer and the launcher use the contract's values, not copies of them.
    assert (
        train.PREEMPTED_EXIT_CODE is PREEMPTED_EXIT_CODE and launch.PREEMPTED_EXIT_CODE is PREEMPTED_EXIT_CODE
    )
    assert str(train.Preempted(6, None)).startswith(PREEMPTED_MESSAGE)
    assert preempted(f'Container "trainer" failed. Last 100 log lines: "{train.Preempted(6, None)}"')


def _hub_recipe(tmp_path: Path, shards: int):
    """A recipe with one `hf` source: a local dataset directory in the hub's file layout (7 Parquet files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from lm_platform.recipe import load_recipe

    root = tmp_path / "ds" / "data"
    root.mkdir(parents=True)
    for f in range(7):
        rows = [{"text": f"document {f}-{r} about the weather " * 4} for r in range(3 + f)]
        pq.write_table(pa.Table.from_pylist(rows), root / f"train-{f:05d}-of-00007.parquet")
    recipe = {
        "name": "hub",
        "languages": {"en": {"chars_per_token": 4.0, "filters": [{"name": "length", "min_chars": 20}]}},
        "sources": [
            {
                "name": "web",
                "location": str(tmp_path / "ds"),
                "format": "hf",
                "license": "CC0-1.0",
                "language": "en",
            }
            | ({"shards": shards} if shards > 1 else {})
        ],
        "license_allowlist": ["CC0-1.0"],
        "tokenizer": {"vocab_size": 300},
        "model": {},
        "stages": [{"name": "main", "blend": {"mixture": {"web": 1.0}, "target_tokens": 100}}],
    }
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return load_recipe(str(path))


def test_sharded_hub_source_reads_its_corpus_by_partition(tmp_path):
    from lm_platform.data.corpus.documents import iter_docs

    recipe = _hub_recipe(tmp_path, shards=3)
    assets = build_assets(recipe)
    by_key = {k: a for a in assets for k in a.keys}
    corpus, curated = dg.AssetKey(["corpus", "web"]), dg.AssetKey(["curated", "web"])
    assert by_key[corpus].partitions_def == by_key[curated].partitions_def
    instance = dg.DagsterInstance.ephemeral()
    storage = LMStorage(root=str(tmp_path / "data"))
    docs = {}
    for key in ["0000", "0001", "0002"]:
        run = dg.materialize(
            assets,
            selection=dg.AssetSelection.assets(corpus, curated),
            partition_key=key,
            resources={"storage": storage, "trainer": dg.PipesSubprocessClient()},
            instance=instance,
        )
        meta = {e.asset_key: e.materialization.metadata for e in run.get_asset_materialization_events()}
        shard = tmp_path / "data" / "hub" / "corpus" / "web" / f"{key}.parquet"
        docs[key] = [d["text"].split()[1].split("-")[0] for d in iter_docs(shard)]
        assert meta[corpus]["docs"].value == len(docs[key])
        assert meta[curated]["docs_in"].value == len(docs[key]), "curated reads its own corpus shard"
    # Shard i read files i, i+3, ... only; together the whole dataset, each document once.
    assert [sorted(set(v)) for v in docs.values()] == [["0", "3", "6"], ["1", "4"], ["2", "5"]]
    assert sum(len(v) for v in docs.values()) == sum(3 + f for f in range(7))
    # What a reference LM trained on the source reads: the shard directory, in shard order.
    whole = [d["text"].split()[1].split("-")[0] for d in iter_docs(shard.parent)]
    assert whole == docs["0000"] + docs["0001"] + docs["0002"]


def test_unsharded_hub_source_keeps_one_corpus_file(tmp_path):
    recipe = _hub_recipe(tmp_path, shards=1)
    (corpus,) = [a for a in build_assets(recipe) if dg.AssetKey(["corpus", "web"]) in a.keys]
    assert corpus.partitions_def is None


def test_training_automation_lives_in_the_automation_module(demo_recipe):
    from lm_platform.defs import automation, k8s

    training = {f"train_demo_{s.name}" for s in demo_recipe.stages}
    auto = automation.build(demo_recipe, ["demo"], running=False, training=True)
    stopped = {s.name for s in auto.sensors if s.default_status == dg.DefaultSensorStatus.STOPPED}
    assert training <= stopped
    assert not training & {s.name for s in automation.build(demo_recipe).sensors}, "local: no training"
    source = Path(k8s.__file__).read_text(encoding="utf-8")
    assert "AutomationCondition" not in source and "Sensor" not in source
    defs = build_deployment_definitions(demo_recipe, Profile(), prefix=[])
    assert training <= {s.name for s in defs.sensors}


@pytest.mark.parametrize("status, attempts", [(75, 1 + resources_defs.PREEMPTION_RETRIES), (3, 1)])
def test_preempted_trainer_pod_is_retried(tmp_path, monkeypatch, demo_recipe, status, attempts):
    """On the emulated cluster: a trainer pod that exits 75 is a retry (each attempt a new pod, each
    deleted); any other exit status fails once."""
    import logging
    import time

    import kubernetes
    from dagster_k8s.client import DagsterKubernetesClient

    from lm_platform_tests.k8s_emulation import EmulatedCoreV1Api

    api = EmulatedCoreV1Api()
    client = DagsterKubernetesClient(
        batch_api=None, core_api=api, logger=logging.info, sleeper=lambda s: time.sleep(0.05), timer=time.time
    )
    monkeypatch.setattr(DagsterKubernetesClient, "production_client", staticmethod(lambda *a, **k: client))
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda *a, **k: None)
    from lm_platform.training.contract import PREEMPTED_MESSAGE

    said = f"print('{PREEMPTED_MESSAGE} 6; checkpoint x')" if status == 75 else "print('boom')"
    command = [sys.executable, "-c", f"import sys; {said}; sys.exit({status})"]
    spec = {"containers": [{"name": "trainer", "image": "lm:1", "command": command}]}
    monkeypatch.setattr("lm_platform.defs.k8s_trainer.trainer_pod_spec", lambda *a, **k: spec)
    monkeypatch.setattr(training_defs, "make_job", lambda *a, **k: Profile())
    monkeypatch.setattr(resources_defs, "PREEMPTION_RETRY_WAIT_S", 0)
    k8s = Profile(kind="k8s", image="lm:1", storage={"pvc": "lm-data", "mount_path": str(tmp_path)})
    defs = build_deployment_definitions(demo_recipe, k8s, prefix=[])
    key = dg.AssetKey(["checkpoint", demo_recipe.stages[0].name])
    run = dg.materialize(
        [defs.get_assets_def(key)],
        selection=dg.AssetSelection.assets(key),
        resources={"storage": LMStorage(root=str(tmp_path)), "trainer": defs.resources["trainer"]},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not run.success
    assert len(api.created) == attempts and len(api.deleted) == attempts and not api.pods
