"""Preemption with `nproc_per_node: 2` on CPU (gloo), through the launcher as Dagster and the trainer pod
run it: SIGTERM during the loop ends with a checkpoint at the last completed step, the launcher exits 75
(torchrun alone exits 1), and the retried run resumes from it; SIGTERM during setup and during finish is
a preemption too. Each test is a couple of short torchrun runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from lm_platform.atomic import write_json
from lm_platform.training.checkpoint import step_dirs
from lm_platform.training.contract import PREEMPTED_EXIT_CODE, PREEMPTED_MESSAGE, preempted
from lm_platform_tests.training_fixtures import TINY, launch_command, make_job, write_job

VOCAB = 64


def _env(hook: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    path = str(Path(__file__).resolve().parents[1])
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=path if hook is None else f"{hook}{os.pathsep}{path}")
    env["LM_PLATFORM_TERMINATION_GRACE_SECONDS"] = "120"
    return env


# Put on a worker's PYTHONPATH as `sitecustomize.py` (imported at start-up), it holds the trainer at one
# point until the trainer's SIGTERM handler has run, so SIGTERM lands there on every machine, however fast
# the steps are. When the packed-dataset module is imported, `SplitReader` is wrapped: at the read $HOLD_AT
# names it writes `waiting.<rank>` into $HOLD_HOOK_DIR and waits until the trainer's `StopFlag` (the
# installed SIGTERM handler's owner) says stop. `train:N`: the N-th read of training rows (the prefetch
# thread's, for step N); `final-validation`: the first read of validation rows after a training read (the
# final validation in `finish`; setup's initial one comes before any). The trainer runs as `__main__` under
# torchrun, so the hook wraps a class it imports rather than its own functions.
HOLD_HOOK = """
import importlib.abc
import os
import signal
import sys
import time

TARGET = "lm_platform.data.blending.pack"


def _hold():
    open(os.path.join(os.environ["HOLD_HOOK_DIR"], "waiting." + os.environ.get("RANK", "0")), "w").close()
    flag = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)  # the trainer's StopFlag
    deadline = time.monotonic() + 120
    while not getattr(flag, "requested", True) and time.monotonic() < deadline:
        time.sleep(0.02)


def _patch(module):
    cls, at = module.SplitReader, os.environ["HOLD_AT"]
    state = {"train": 0, "held": False}
    init, rows = cls.__init__, cls.rows

    def __init__(self, dataset_dir, split):
        init(self, dataset_dir, split)
        self._hook_split = split

    def read(self, ids):
        if self._hook_split == "train":
            state["train"] += 1
            hold = at == "train:" + str(state["train"])
        else:
            hold = at == "final-validation" and state["train"] > 0
        if hold and not state["held"]:
            state["held"] = True
            _hold()
        return rows(self, ids)

    cls.__init__, cls.rows = __init__, read


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else finder.find_spec(name, path, target)
            if spec is not None:
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    _patch(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


sys.meta_path.insert(0, _Finder())
"""


def _hook(tmp: Path, at: str) -> tuple[Path, dict[str, str]]:
    """A folder holding HOLD_HOOK as `sitecustomize.py`, and the environment that tells it where to hold."""
    hook = tmp / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_HOOK)
    return hook, {"HOLD_HOOK_DIR": str(hook), "HOLD_AT": at}


def _held(hook: Path) -> bool:
    return sorted(p.name for p in hook.glob("waiting.*")) == ["waiting.0", "waiting.1"]


def _dataset(out: Path, train_rows: int, val_rows: int, seq_len: int = 16) -> Path:
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", train_rows), ("val", val_rows)):
        data = rng.integers(4, VOCAB, size=(n, seq_len + 1)).astype(np.uint16)
        np.save(out / f"{split}_00000.npy", data)
        splits[split] = {"docs": n, "tokens": data.size, "rows": n, "padding": 0,
                         "shards": [{"file": f"{split}_00000.npy", "rows": n}]}  # fmt: skip
    write_json(
        out / "index.json",
        {
            "seq_len": seq_len,
            "row_len": seq_len + 1,
            "dtype": "uint16",
            "vocab_size": VOCAB,
            "bos_id": 1,
            "eos_id": 2,
            "pad_id": 3,
            "model_pad_id": 3,
            "val_fraction": 0.1,
            "splits": splits,
            "sources": {},
            "tokens": sum(s["tokens"] for s in splits.values()),
        },  # fmt: skip
    )
    return out


def _start(
    tmp: Path, train_rows: int, val_split: int = 8, hook: tuple[Path, dict] | None = None, **train
) -> tuple[dict, Path, subprocess.Popen]:
    data = _dataset(tmp / "data", train_rows, val_split)
    (tmp / "tok").mkdir()
    settings = dict(micro_batch_size=2, epochs=1, lr=3e-3, warmup_steps=2, log_every=1) | train
    job = make_job(tmp, "s", data, tmp / "tok", {"kind": "scratch", "model": TINY}, **settings)
    job_file = write_job(job, tmp / "job.json")
    env = _env(hook[0] if hook else None)
    env.update(hook[1] if hook else {})
    proc = subprocess.Popen(
        launch_command(job_file, 2), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return job, job_file, proc


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _terminate(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    return proc.returncode, out


def _retry(job_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        launch_command(job_file, 2), env=_env(), capture_output=True, text=True, timeout=300
    )


def test_sigterm_in_the_loop_checkpoints_the_last_step_and_the_retry_resumes(tmp_path):
    # Held at step 5's read until SIGTERM arrived: the loop stops at step 4 or 5, never at the end.
    hook = _hook(tmp_path, "train:5")
    job, job_file, proc = _start(tmp_path, train_rows=400, hook=hook)  # 100 steps of 2 x 2 rows
    log = Path(job["run_dir"]) / "log.jsonl"
    _wait_for(proc, lambda: _held(hook[0]) and log.exists() and len(log.read_text().splitlines()) >= 3)
    status, out = _terminate(proc)
    assert status == PREEMPTED_EXIT_CODE, out[-3000:]  # torchrun itself exited 1
    assert preempted(f"External execution process failed with code {status}")  # what the asset retries on
    ((step, _),) = step_dirs(job["run_dir"])
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert step == logged[-1] and step in (4, 5) and f"{PREEMPTED_MESSAGE} {step}" in out
    done = _retry(job_file)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resumed from step_{step:08d}" in done.stdout
    metrics = json.loads((Path(job["output_dir"]) / "metrics.json").read_text())
    assert (
        metrics["processes"] == 2
        and metrics["steps"] == 100
        and metrics["resumed_from"] == f"step_{step:08d}"
    )


def _workers(launcher: int) -> list[int]:
    """The trainer processes under the launcher (its torchrun's children)."""

    def children(pid: int) -> list[int]:
        try:
            return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    return [w for t in children(launcher) for w in children(t)]


def test_sigterm_during_setup_is_a_preemption(tmp_path):
    job, job_file, proc = _start(tmp_path, train_rows=64)
    _wait_for(proc, lambda: len(_workers(proc.pid)) == 2)  # workers started, still importing or loading
    status, out = _terminate(proc)
    assert status == PREEMPTED_EXIT_CODE, out[-3000:]
    assert PREEMPTED_MESSAGE in out and step_dirs(job["run_dir"]) == []
    done = _retry(job_file)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_sigterm_during_finish_is_a_preemption_and_the_retry_exports(tmp_path):
    # SIGTERM inside the final validation, deterministically: the hook holds each rank's final
    # validation until its SIGTERM has arrived (a large validation split only made that likely: the
    # faster the loss, the more often the run exported first; a flaky failure in CI and here).
    hook = _hook(tmp_path, "final-validation")
    job, job_file, proc = _start(tmp_path, train_rows=64, hook=hook, micro_batch_size=8)
    _wait_for(proc, lambda: _held(hook[0]))
    assert [s for s, _ in step_dirs(job["run_dir"])] == [4]  # the final step's checkpoint, then finish
    status, out = _terminate(proc)
    assert status == PREEMPTED_EXIT_CODE, out[-3000:]
    assert f"{PREEMPTED_MESSAGE} 4" in out and not Path(job["output_dir"]).exists()
    done = _retry(job_file)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        "resumed from step_00000004" in done.stdout
        and (Path(job["output_dir"]) / "model.safetensors").exists()
    )
