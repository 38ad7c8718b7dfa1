"""SIGTERM outside the training steps (one process, in this process): during setup (model load,
initial validation) and during finish (after the final checkpoint) the trainer stops with `Preempted`
instead of dying, and the retried run resumes and completes. The launcher's exit status rules."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from lm_platform.training import checkpoint as ckpt
from lm_platform.training import train as trainer
from lm_platform.training.contract import PREEMPTED_EXIT_CODE, read_preempted, write_preempted
from lm_platform_tests.training_fixtures import TINY, launch_command, make_job, synthetic_dataset

VOCAB = 64


@pytest.fixture
def job(tmp_path):
    data = synthetic_dataset(tmp_path / "data", VOCAB, rows=16, seq_len=16)
    (tmp_path / "tok").mkdir()
    init = {"kind": "scratch", "model": TINY}
    return make_job(tmp_path, "s", data, tmp_path / "tok", init, micro_batch_size=4, epochs=1)


def _sigterm_on_call(monkeypatch, name: str, call: int) -> list[int]:
    """Make `train.<name>` send this process SIGTERM on its `call`-th call (then behave as before)."""
    real = getattr(trainer, name)
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, name, wrapped)
    return calls


def test_sigterm_while_the_model_loads_is_a_preemption(job, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL alone; a pytest-xdist worker has its own
    _sigterm_on_call(monkeypatch, "build_model", 1)
    with pytest.raises(trainer.Preempted) as exc:
        trainer.train(job, trainer.Reporter())
    assert exc.value.step == 0 and exc.value.path is None
    assert signal.getsignal(signal.SIGTERM) is before  # the trainer's handler is gone again
    monkeypatch.undo()
    assert trainer.train(job, trainer.Reporter())["steps_run"] == 4


def test_sigterm_during_the_initial_validation_is_a_preemption(job, monkeypatch):
    _sigterm_on_call(monkeypatch, "evaluate_loss", 1)
    with pytest.raises(trainer.Preempted):
        trainer.train(job, trainer.Reporter())
    assert ckpt.step_dirs(job["run_dir"]) == [] and not Path(job["output_dir"]).exists()


def test_sigterm_during_finish_keeps_the_final_checkpoint_and_the_retry_exports(job, monkeypatch):
    calls = _sigterm_on_call(monkeypatch, "evaluate_loss", 2)  # the final validation
    with pytest.raises(trainer.Preempted) as exc:
        trainer.train(job, trainer.Reporter())
    assert calls[0] == 2 and exc.value.step == 4
    assert [s for s, _ in ckpt.step_dirs(job["run_dir"])] == [4] and not Path(job["output_dir"]).exists()
    monkeypatch.undo()
    metrics = trainer.train(job, trainer.Reporter())
    assert metrics["resumed_from"] == "step_00000004" and metrics["steps_run"] == 0
    assert (Path(job["output_dir"]) / "model.safetensors").exists()


def test_the_trainer_records_its_preemption_for_the_launcher(job, monkeypatch):
    _sigterm_on_call(monkeypatch, "evaluate_loss", 2)
    path = Path(job["dataset_dir"]).parent / "job.json"
    path.write_text(__import__("json").dumps(job))
    assert trainer.main(["--job", str(path)]) == PREEMPTED_EXIT_CODE
    assert read_preempted(job["run_dir"])["step"] == 4


def test_the_launchers_exit_status(tmp_path):
    from lm_platform.training.launch import exit_status

    run = tmp_path / "run"
    run.mkdir()
    assert exit_status(0, True, run)[0] == 0  # finished: nothing to retry
    assert exit_status(1, False, run) == (1, None)  # a failure is not retried
    status, line = exit_status(1, True, run)  # SIGTERM before any worker could record it
    assert status == PREEMPTED_EXIT_CODE and "stopped by SIGTERM" in line
    write_preempted(run, 7, run / "step_00000007")
    status, line = exit_status(1, False, run)  # torchrun's 1 after its workers stopped for SIGTERM
    assert status == PREEMPTED_EXIT_CODE and "after step 7" in line
    (run / "PREEMPTED").unlink()
    (run / "FINISHED").touch()
    status, line = exit_status(1, True, run)  # torchrun's 1 for a SIGTERM that came after the stage finished
    assert status == 0 and "had finished" in line  # success: neither a failure nor a retry that trains afresh
    assert exit_status(1, False, run) == (1, None)  # a real failure after a finished run is still a failure


def test_torchrun_gets_the_grace_period_as_its_shutdown_timeout(monkeypatch):
    from lm_platform.training.launch import grace_seconds, torchrun_command

    assert grace_seconds({"LM_PLATFORM_TERMINATION_GRACE_SECONDS": "600"}) == 600
    cmd = torchrun_command("/j.json", 2, 600)
    assert "--shutdown-timeout=590" in cmd and cmd[cmd.index("-m", 3) + 1] == "lm_platform.training.train"
    assert launch_command("/j.json", 2)[1:3] == ["-m", "lm_platform.training.launch"]
    assert "--nproc_per_node=1" in launch_command("/j.json")
    with pytest.raises(ValueError, match="LM_PLATFORM_TERMINATION_GRACE_SECONDS"):
        grace_seconds({"LM_PLATFORM_TERMINATION_GRACE_SECONDS": "5m"})


def test_sigterm_while_a_single_process_trainer_starts_is_a_preemption(job, tmp_path):
    """Through the launcher, a SIGTERM in the trainer's first moments (still importing torch, before it
    could handle the signal) ends with 75 too; a SIGKILL of the launcher takes the trainer with it."""
    import json
    import subprocess
    import sys
    import time

    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def started(cmd):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 60
        while not (children.exists() and children.read_text().split()):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        return proc, int(children.read_text().split()[0])

    proc, _ = started(launch_command(path))
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == PREEMPTED_EXIT_CODE, out[-3000:]
    assert "stopped by SIGTERM" in out
    if sys.platform.startswith("linux"):
        proc, child = started(launch_command(path))
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
            assert time.monotonic() < deadline, "the trainer outlived its launcher"
            time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
