"""The throughput options of a stage's `train` section: defaults that keep a run's resume identity,
the attention-inclusive FLOPs count, and MFU / peak memory / data-wait share in the run log, the step
checkpoint's state and the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lm_platform.training.checkpoint import run_identity, step_dirs
from lm_platform.training.config import TrainJob
from lm_platform_tests.training_fixtures import TINY, make_job, synthetic_dataset

NEW_OPTIONS = ("compile", "activation_checkpointing", "parallelism", "data_prefetch", "pin_memory")


def _identity(tmp_path, **train):
    data = tmp_path / "data"
    if not data.exists():
        synthetic_dataset(data, 64)
        (tmp_path / "tok").mkdir()
    job = make_job(tmp_path, "s", data, tmp_path / "tok", {"kind": "scratch", "model": TINY}, **train)
    return run_identity(TrainJob.model_validate(job), 1)


def test_new_options_at_their_defaults_leave_the_resume_identity_as_before(tmp_path):
    default = _identity(tmp_path)
    assert not set(NEW_OPTIONS) & set(default["train"])  # the identity of runs started before them
    assert default["world"] == 1
    # Same gradients: recomputation, prefetching and pinning never start a run again.
    for same in (dict(activation_checkpointing="full"), dict(data_prefetch=0), dict(pin_memory=False)):
        assert _identity(tmp_path, **same) == default, same
    # Different numerics: part of the identity once set.
    assert _identity(tmp_path, compile=True)["train"]["compile"] is True
    fsdp = _identity(tmp_path, parallelism="fsdp", micro_batch_size=4, grad_accum=2)
    assert fsdp["train"]["parallelism"] == "fsdp" and "world" not in fsdp
    assert fsdp["global_batch_rows"] == 8 and "grad_accum" not in fsdp["train"]
    # FSDP: the same rows per step with other factors is the same run (resumable on other process counts).
    assert _identity(tmp_path, parallelism="fsdp", micro_batch_size=2, grad_accum=4) == fsdp


def test_flops_per_token_counts_every_matmul_and_attention():
    import torch

    from lm_platform.modeling.init import build_model
    from lm_platform.training.flops import flops_per_token, mfu

    for tied in (False, True):
        model = build_model(
            {"kind": "scratch", "model": {**TINY, "tie_word_embeddings": tied}}, 80, 1, 2, 3, 0
        )
        matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        c = model.config
        attention = (
            12 * c.num_hidden_layers * c.num_attention_heads * (c.hidden_size // c.num_attention_heads) * 32
        )
        assert flops_per_token(c, 32) == 6 * matmul + attention
        assert flops_per_token(c, 64) - flops_per_token(c, 32) == attention  # grows with the sequence
    assert mfu(1e9, 1e4, "cpu", 1) is None  # no peak to compare with on CPU


def test_run_log_checkpoint_state_and_metrics_carry_mfu_memory_and_data_wait(tmp_path):
    from lm_platform.modeling.init import build_model
    from lm_platform.training.flops import flops_per_token
    from lm_platform.training.train import Reporter, train

    data = synthetic_dataset(tmp_path / "data", 64, rows=24, seq_len=16)
    (tmp_path / "tok").mkdir()
    job = make_job(
        tmp_path,
        "s",
        data,
        tmp_path / "tok",
        {"kind": "scratch", "model": TINY},
        log_every=2,
        checkpoint_every=3,
    )
    metrics = train(job, Reporter())
    expected = flops_per_token(build_model({"kind": "scratch", "model": TINY}, 64, 1, 2, 3, 0).config, 16)
    assert metrics["flops_per_token"] == expected
    assert metrics["mfu"] is None  # CPU
    assert 0 <= metrics["data_wait_share"] < 1 and metrics["peak_rss_bytes"] > 0
    assert metrics["layout"] == "replicated"
    state = json.loads((step_dirs(job["run_dir"])[0][1] / "trainer_state.json").read_text())
    assert {"mfu", "flops_per_token", "data_wait_share", "peak_rss_bytes"} <= set(state["perf"])
    log = [json.loads(line) for line in (Path(job["run_dir"]) / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "data_wait_share" in r]
    assert steps and all(r["data_wait"] >= 0 and "peak_rss_bytes" in r for r in steps)


def test_prefetcher_serves_the_trainers_order_and_falls_back_when_it_changes():
    from lm_platform.training.dataloader import Prefetcher
    from lm_platform.training.train import DataOrder

    order = DataOrder(20, 4, seed=1)
    loaded = []

    def load(rows):
        loaded.append(rows.copy())
        return [(rows.copy(),)]

    pre = Prefetcher(order, load, depth=2, limit=5)
    for _ in range(3):
        rows = order.next_step()
        assert np.array_equal(pre.get(rows)[0][0], rows)
    assert order.position()["served"] == 12  # the trainer's own order advanced, not a copy's
    odd = np.array([0, 1, 2, 3])  # not what the thread predicted: read inline
    assert np.array_equal(pre.get(odd)[0][0], odd)
    pre.close()
    assert pre.wait_seconds >= 0
