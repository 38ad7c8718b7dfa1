"""Step checkpoints and exports across runs: resume identity (only what changes the trajectory), runs moved
aside instead of deleted, retention of kept checkpoints, durable publication, exports in the model's
dtype sharing the step's files, the CUDA RNG state, SIGTERM, and bounded memory on large datasets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lm_platform.training import checkpoint as ckpt
from lm_platform.training.contract import PREEMPTED_EXIT_CODE
from lm_platform.training.train import Reporter, train
from lm_platform_tests.training_fixtures import (
    TINY,
    load_weights,
    make_job,
    synthetic_dataset,
    tiny_checkpoint,
    write_job,
)

VOCAB = 64


@pytest.fixture
def setup(tmp_path):
    data = synthetic_dataset(tmp_path / "data", VOCAB, rows=16, seq_len=16)
    (tmp_path / "tok").mkdir()
    tiny_checkpoint(tmp_path / "init", VOCAB)

    def job(name="s", **train_settings):
        settings = dict(micro_batch_size=4, epochs=1, checkpoint_every=1, keep_last=2) | train_settings
        return make_job(
            tmp_path,
            name,
            data,
            tmp_path / "tok",
            {"kind": "pretrained", "path": str(tmp_path / "init")},
            **settings,
        )

    return tmp_path, job


def _steps(job) -> list[int]:
    return [s for s, _ in ckpt.step_dirs(job["run_dir"])]


def test_settings_that_do_not_change_the_trajectory_resume(setup):
    tmp, job = setup
    first = job()
    train(first, Reporter(), stop_after=2)
    assert _steps(first) == [1, 2]
    # Logging, retention, generation prompts and the init files' times do not change the weights' path.
    os.utime(tmp / "init" / "model.safetensors", (1, 1))
    changed = job(log_every=1, keep_last=3, checkpoint_every=2, val_rows=8)
    changed["generation"] = {"prompts": [], "max_new_tokens": 5}
    metrics = train(changed, Reporter())
    assert metrics["resumed_from"] == "step_00000002" and metrics["steps_run"] == 2


def test_a_changed_run_is_moved_aside_with_the_differing_fields(setup, capsys):
    tmp, job = setup
    train(job(), Reporter(), stop_after=2)
    # The init weights' content changed (same file names): a different run.
    tiny_checkpoint(tmp / "init", VOCAB, seed=1)
    metrics = train(job(lr=5e-3), Reporter())
    out = capsys.readouterr().out
    assert metrics["resumed_from"] is None and metrics["steps_run"] == 4
    aside = Path(job()["run_dir"]) / "aside" / "0001-changed"
    assert [p.name for p in sorted(aside.glob("step_*"))] == ["step_00000001", "step_00000002"]
    assert "train.lr: 0.01 -> 0.005" in out and "init.weights:" in out and str(aside) in out


def test_old_format_checkpoints_are_moved_aside_not_resumed(setup, capsys):
    tmp, job = setup
    j = job()
    train(j, Reporter(), stop_after=2)
    state_file = Path(j["run_dir"]) / "step_00000002" / ckpt.STATE_FILE
    state = json.loads(state_file.read_text())
    for key in ("format", "identity"):
        state.pop(key)
    state_file.write_text(json.dumps(state))  # as the previous trainer wrote them
    metrics = train(j, Reporter())
    assert metrics["resumed_from"] is None
    assert "an older checkpoint format" in capsys.readouterr().out
    assert (Path(j["run_dir"]) / "aside" / "0001-changed" / "step_00000002").is_dir()


def test_kept_checkpoints_survive_keep_last_retraining_and_the_aside_bound(setup):
    tmp, job = setup
    j = job(keep_last=1, keep_steps=[2], keep_aside=1)
    train(j, Reporter(), stop_after=1)
    ckpt.mark_kept(j["run_dir"], 1, "evaluated")  # the evaluation assets' call
    metrics = train(j, Reporter())
    assert _steps(j) == [1, 2, 4] and ckpt.kept_steps(j["run_dir"]) == [1, 2]
    assert metrics["kept_steps"] == [1, 2] and metrics["disk_bytes"] > 0
    # Retrained twice: each finished run is moved aside; beyond keep_aside=1 only kept checkpoints remain.
    train(j, Reporter())
    train(j, Reporter())
    aside = Path(j["run_dir"]) / "aside"
    assert sorted(p.name for p in aside.iterdir()) == ["0001-finished", "0002-finished"]
    assert sorted(p.name for p in (aside / "0001-finished").iterdir()) == ["step_00000001", "step_00000002"]
    assert {"step_00000002", "step_00000004"} <= {p.name for p in (aside / "0002-finished").iterdir()}
    with pytest.raises(FileNotFoundError, match="step_00000009"):
        ckpt.mark_kept(j["run_dir"], 9)


def test_the_export_shares_the_step_files_and_is_in_the_models_dtype(setup):
    tmp, job = setup
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tmp / "init"))
    base.to(torch.bfloat16).save_pretrained(str(tmp / "init"))  # a bf16 base, as SmolLM2 ships
    j = job()
    metrics = train(j, Reporter())
    out, last = Path(j["output_dir"]), Path(j["run_dir"]) / "step_00000004"
    assert metrics["export_dtype"] == "bfloat16"
    assert {v.dtype for v in load_weights(out).values()} == {torch.bfloat16}
    assert {v.dtype for v in load_weights(last).values()} == {torch.float32}  # bit-exact resume
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    for name in ("optimizer.safetensors", "trainer_state.json", "samples.json"):
        assert os.stat(out / name).st_ino == os.stat(last / name).st_ino, name  # hard links, one copy
    assert torch.equal(
        load_weights(out)["lm_head.weight"], load_weights(last)["lm_head.weight"].to(torch.bfloat16)
    )


def test_the_next_stage_starts_from_the_float32_weights_of_a_bf16_export(setup):
    """A bf16 base: the export is bf16 for the user, the next stage starts from the step's float32
    weights (not rounded at the stage boundary) and publishes bf16 again."""
    tmp, job = setup
    from transformers import AutoModelForCausalLM

    from lm_platform.training.train import setup as setup_stage

    base = AutoModelForCausalLM.from_pretrained(str(tmp / "init"))
    base.to(torch.bfloat16).save_pretrained(str(tmp / "init"))
    first = job("first")
    train(first, Reporter())
    out, last = Path(first["output_dir"]), Path(first["run_dir"]) / "step_00000004"
    full = out / ckpt.FULL_PRECISION_DIR
    assert os.stat(full / "model.safetensors").st_ino == os.stat(last / "model.safetensors").st_ino
    second = job("second") | {"init": {"kind": "pretrained", "path": str(out)}}
    run, _ = setup_stage(_job(second))
    try:
        exact = load_weights(last)
        got = {k: v.detach() for k, v in run.model.state_dict().items()}
        assert all(torch.equal(got[k], exact[k]) for k in exact)  # float32, bit for bit
        assert any(not torch.equal(exact[k].to(torch.bfloat16).float(), exact[k]) for k in exact)
        assert run.export_dtype == "bfloat16"  # what the user gets keeps the recipe's dtype
    finally:
        run.train_rows.close()
        run.eval_rows.close()


def _job(obj):
    from lm_platform.training.config import TrainJob

    return TrainJob.model_validate(obj)


def test_publishing_fsyncs_files_and_directories_around_the_rename(tmp_path, monkeypatch):
    import lm_platform.atomic as atomic

    step = tmp_path / "run" / "step_00000001"
    step.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.safetensors", "config.json"):
        (step / name).write_bytes(b"x" * 10)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", str(a), str(b)))
        real_replace(a, b)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    out = tmp_path / "export"
    ckpt.export(step, out, "float32", {"metrics.json": {"a": 1}})
    publish = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(out))
    tmp_dir = events[publish][1]
    synced_before = {e[1] for e in events[:publish] if e[0] == "fsync"}
    for name in ("model.safetensors", "optimizer.safetensors", "config.json", "metrics.json"):
        assert f"{tmp_dir}/{name}" in synced_before, name
    assert tmp_dir in synced_before
    assert ("fsync", str(tmp_path)) in events[publish + 1 :]  # the rename itself made durable


def test_leftovers_of_an_interrupted_export_are_cleaned(setup):
    tmp, job = setup
    j = job()
    out = Path(j["output_dir"])
    leftover = out.parent / f".tmp-{out.name}-0123abcd"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"partial")
    train(j, Reporter())
    assert not leftover.exists() and (out / "model.safetensors").exists()


def test_cuda_rng_states_are_saved_and_restored(tmp_path, monkeypatch):
    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: restored.append([t.clone() for t in s]))
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model.save_pretrained = lambda d, **k: (Path(d) / "config.json").write_text("{}")  # no weights needed
    ckpt.save(tmp_path / "c", model, opt, {"step": 1}, tmp_path)
    cpu_before = torch.get_rng_state()
    torch.rand(3)
    ckpt.load_into(tmp_path / "c", opt)
    assert torch.equal(torch.get_rng_state(), cpu_before)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], states, strict=True))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return env


def test_sigterm_writes_a_checkpoint_at_the_last_step_and_a_restart_ends_equal(tmp_path):
    from lm_platform_tests.training_fixtures import launch_command

    data = synthetic_dataset(tmp_path / "data", VOCAB, rows=400, seq_len=16)
    (tmp_path / "tok").mkdir()
    settings = dict(micro_batch_size=4, epochs=1, lr=3e-3, warmup_steps=2, log_every=1)
    init = {"kind": "scratch", "model": TINY}
    ref = make_job(tmp_path / "ref", "ref", data, tmp_path / "tok", init, **settings)
    subprocess.run(
        launch_command(write_job(ref, tmp_path / "ref.json")), env=_env(), check=True, capture_output=True
    )
    job = make_job(tmp_path / "run", "run", data, tmp_path / "tok", init, **settings)
    job_file = write_job(job, tmp_path / "run.json")
    proc = subprocess.Popen(
        launch_command(job_file), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    log = Path(job["run_dir"]) / "log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == PREEMPTED_EXIT_CODE, proc.stderr.read().decode()[-3000:]
    ((step, path),) = ckpt.step_dirs(job["run_dir"])  # no periodic checkpoints: this one is SIGTERM's
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert step == logged[-1] and 3 <= step < 100
    assert json.loads((path / ckpt.STATE_FILE).read_text())["step"] == step
    assert not Path(job["output_dir"]).exists()
    done = subprocess.run(launch_command(job_file), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from step_{step:08d}" in done.stdout
    a, b = load_weights(Path(ref["output_dir"])), load_weights(Path(job["output_dir"]))
    for name in a:
        assert torch.equal(a[name], b[name]), name


RSS_SCRIPT = """
import resource, sys
from lm_platform.training.train import Reporter, train
from lm_platform.training.config import TrainJob
train(TrainJob.read(sys.argv[1]), Reporter(), stop_after=3)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_does_not_grow_with_the_dataset(tmp_path):
    """The trainer reads rows on demand: 10x the dataset (in several shards) costs at most 1.2x the peak
    RSS of 1x (the whole split used to be concatenated in memory on every rank)."""
    from lm_platform.atomic import write_json

    seq = 512
    peaks = {}
    for scale in (1, 10):
        data = tmp_path / f"data{scale}"
        data.mkdir()
        rows_per_shard = 8_000  # ~8 MB per shard; 1x: 3 shards (~25 MB), 10x: 30 (~250 MB)
        shards = []
        rng = np.random.default_rng(scale)
        for i in range(3 * scale):
            for split in ("train", "val"):
                n = rows_per_shard if split == "train" else rows_per_shard // 8
                np.save(
                    data / f"{split}_{i:05d}.npy", rng.integers(4, VOCAB, size=(n, seq + 1), dtype=np.uint16)
                )
            shards.append(i)
        splits = {
            split: {
                "docs": 1,
                "tokens": 1,
                "rows": n * len(shards),
                "padding": 0,
                "shards": [{"file": f"{split}_{i:05d}.npy", "rows": n} for i in shards],
            }
            for split, n in (("train", rows_per_shard), ("val", rows_per_shard // 8))
        }
        write_json(
            data / "index.json",
            {
                "seq_len": seq,
                "row_len": seq + 1,
                "dtype": "uint16",
                "vocab_size": VOCAB,
                "bos_id": 1,
                "eos_id": 2,
                "pad_id": 3,
                "model_pad_id": 3,
                "tokens": 1,
                "splits": splits,
                "sources": {},
            },
        )
        (tmp_path / "tok").mkdir(exist_ok=True)
        job = make_job(
            tmp_path / f"j{scale}",
            "rss",
            data,
            tmp_path / "tok",
            {"kind": "scratch", "model": {**TINY, "max_position_embeddings": seq}},
            micro_batch_size=2,
            token_budget=3 * 2 * seq,
            val_rows=16,
        )
        done = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, str(write_job(job, tmp_path / f"j{scale}.json"))],
            env=_env(),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        peaks[scale] = int(done.stdout.split("PEAK")[-1])
    assert peaks[10] <= 1.2 * peaks[1], peaks
