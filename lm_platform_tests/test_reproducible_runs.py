"""The same recipe and inputs give byte-identical artifacts, however a run was interrupted.

A trimmed demo recipe (a fraction of each source, no KenLM filter, short stages, a one-layer model) is
materialized (every asset but the evaluations, in one process: the in-process executor on an ephemeral
instance, in a child process the test can kill) three times, each into fresh storage: once straight
through; once killed (SIGKILL) while `dataset/main` is being written, then run again on the same storage;
once killed after the first step checkpoint of `checkpoint/main`, then run again (the trainer resumes from
that step). The tokenizer, the blend document lists, the packed datasets and every stage's exported model
must be byte-identical across the three. The same holds for a variant whose tokenizer is trained
(SentencePiece) instead of extended. The full-size demo (its whole corpus, KenLM filter and stages) is a
slow tier that `make test` skips (LM_PLATFORM_SLOW_TESTS=1 runs it).

Most of a trimmed run is Python importing Dagster, torch and transformers (the Dagster process, and each
stage's trainer process), so the three runs of a variant go side by side: two cores do them in about the
time of two.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lm_platform_tests.conftest import REPO, isolated_env, write_demo_variant

pytestmark = pytest.mark.slow

STAGES = ("main", "anneal")
# Every unpartitioned asset (the evaluations are partitioned by model version and score, not build).
MATERIALIZE_ALL = """
import dagster as dg
from lm_platform.definitions import defs
job = dg.define_asset_job("repro", selection=dg.AssetSelection.all() - dg.AssetSelection.groups("evaluation"))
job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("repro")
with dg.DagsterInstance.ephemeral() as instance:
    result = job_def.execute_in_process(instance=instance, raise_on_error=False)
raise SystemExit(0 if result.success else 1)
"""


def _variant(mode: str, size: str):
    """The demo recipe without fine-tuning and merges (they build on the stages' exports; what this test
    compares ends there), trimmed unless `size` is "full", with an extended or a trained tokenizer."""

    def mutate(raw: dict) -> None:
        for section in ("finetune", "merges", "exports"):
            raw.pop(section, None)
        if size == "trimmed":
            _trim(raw)
        if mode == "train":
            raw["tokenizer"] = {
                "mode": "train",
                "model_type": "bpe",
                "vocab_size": 3000,
                "sample": {"max_chars": 400_000, "seed": 5},
            }

    return mutate


def _trim(raw: dict) -> None:
    for src in raw["sources"]:
        src["max_docs"] = 60
    for lang in raw["languages"].values():
        lang["filters"] = [f for f in lang["filters"] if f["name"] != "perplexity"]
        lang.pop("reference_lm", None)
        lang["expected_keep_rate"] = [0.0, 1.0]
    raw["stages"][0]["blend"]["target_tokens"] = 3000
    raw["stages"][1]["blend"]["target_tokens"] = 1500
    for stage in raw["stages"]:
        stage["pack"]["seq_len"] = 32
        stage["train"].update(epochs=1, micro_batch_size=4, checkpoint_every=5, keep_last=2)
    raw["model"].update(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2, num_kv_heads=1)
    raw["model"]["max_position_embeddings"] = 64
    raw["generation"].update(prompts=raw["generation"]["prompts"][:1], max_new_tokens=2)


def _artifacts(base: Path) -> dict[str, str]:
    files = [base / "tokenizer" / "tokenizer.json"]
    for stage in STAGES:
        files += [base / "blend" / stage / "documents.parquet", base / "blend" / stage / "manifest.json"]
        files += sorted((base / "dataset" / stage).glob("*.npy")) + [base / "dataset" / stage / "index.json"]
        files.append(base / "checkpoint" / stage / "model.safetensors")
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _materialize(env: dict[str, str], kill_when=None, timeout: float = 900) -> bool:
    """Materialize every asset; with `kill_when(lines)` (the run's output so far), SIGKILL the whole
    process group once it holds. Returns whether the run was killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MATERIALIZE_ALL],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < timeout:
        if kill_when is not None and kill_when(lines):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    assert proc.returncode == 0, "".join(lines)[-6000:]
    return False


def _run(root: Path, recipe: Path, name: str, kill_when=None) -> Path:
    """Materialize into `root/name`; with `kill_when(base, lines)`, kill the run there, then run it again
    (a fresh instance, the same storage)."""
    storage = root / name / "data"
    env = isolated_env(root / name / "home", storage)
    # One torch thread: a tiny model trains faster on one core than on two threads that wait for each other
    # (and the three runs share the machine's cores); unbuffered output, so the kill point is seen at once.
    env.update(
        LM_PLATFORM_RECIPE=str(recipe),
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    base = storage / "demo"
    if kill_when is not None:
        assert _materialize(env, lambda lines: kill_when(base, lines)), (
            f"{name}: the run ended before the kill point"
        )
    _materialize(env)
    return base


def _packing_main(base: Path, lines: list[str]) -> bool:
    """dataset/main has started (its step began, or its output is being written) and not finished."""
    started = any("dataset__main" in line and "STEP_START" in line for line in list(lines))
    return started or any((base / "dataset").glob(".tmp-main-*"))


def _first_step_checkpoint(base: Path, lines: list[str]) -> bool:
    return any((base / "checkpoint" / "main.run").glob("step_*"))


FULL = pytest.mark.skipif(
    not os.environ.get("LM_PLATFORM_SLOW_TESTS"),
    reason="full-size tier (the whole demo's data and stages, minutes a run): set LM_PLATFORM_SLOW_TESTS=1",
)


@pytest.mark.parametrize(
    "mode, size",
    [("extend", "trimmed"), ("train", "trimmed"), pytest.param("extend", "full", marks=FULL)],
)
def test_runs_killed_anywhere_give_byte_identical_artifacts(tmp_path, mode, size):
    recipe = write_demo_variant(tmp_path, _variant(mode, size), f"{size}_{mode}.yaml")
    runs = {"clean": None, "killed_packing": _packing_main, "killed_training": _first_step_checkpoint}
    with ThreadPoolExecutor(len(runs)) as pool:
        bases = {name: pool.submit(_run, tmp_path, recipe, name, kill) for name, kill in runs.items()}
        artifacts = {name: _artifacts(future.result()) for name, future in bases.items()}
    assert artifacts["killed_packing"] == artifacts["clean"]
    assert artifacts["killed_training"] == artifacts["clean"]
