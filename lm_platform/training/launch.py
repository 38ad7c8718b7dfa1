"""The launcher in front of the trainer: what a Dagster step or a trainer pod runs for a stage.

    python -m lm_platform.training.launch --nproc_per_node 2 --stage main --job job.json

(the arguments of a `training.contract.TrainerLaunch`, which builds this command).

With one process it runs `python -m lm_platform.training.train` (which dies with its launcher: Linux's
parent-death signal), with several torchrun.

torchrun alone hides a preemption: on SIGTERM it stops its workers, waits its own shutdown timeout (30 s
unless told) and exits 1 whatever they did, so the step's retry never sees the trainer's 75. The
launcher starts torchrun with the pod's grace period (env `LM_PLATFORM_TERMINATION_GRACE_SECONDS`, less
a margin) as the workers' shutdown timeout, passes SIGTERM on to it, and decides the exit status:

- 0 when the trainer (or torchrun) succeeded, or when SIGTERM came after the stage finished (its
  export is written; torchrun still exits 1 for the signal);
- 75 (`PREEMPTED_EXIT_CODE`) when the trainer recorded a preemption (`PREEMPTED` in its run
  directory), or when the launcher itself got SIGTERM and the stage did not finish (a SIGTERM that
  came before the workers could handle it: the retried run resumes from the newest checkpoint);
- torchrun's own status otherwise (a real failure is not retried).

It imports neither torch nor the trainer, so it handles SIGTERM from its first moments (a SIGTERM while
the trainer still imports torch kills it with -15: that is a preemption too). On Linux it is
a child subreaper: a worker that torchrun leaves behind (torchrun exits at once, orphaning its workers,
when SIGTERM reaches it while it is still starting them) becomes the launcher's child and is stopped
once torchrun is gone (SIGTERM, then SIGKILL after `LEFTOVER_WAIT_SECONDS`: without torchrun's
rendezvous store such a worker can only wait).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lm_platform.storage import cache as store_cache
from lm_platform.training.contract import (
    DEFAULT_GRACE_SECONDS,
    FINISHED_FILE,
    GRACE_ENV,
    PREEMPTED_EXIT_CODE,
    PREEMPTED_FILE,
    TrainerLaunch,
    preempted_message,
    read_preempted,
    shutdown_timeout,
)

LEFTOVER_WAIT_SECONDS = 5.0
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1


def _become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process instead of init (Linux); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _die_with(parent: int):
    """What the child runs between fork and exec: die with `parent` (SIGKILL when it exits), and at once
    if it is already gone (a parent killed before the prctl would leave the trainer running)."""

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _children() -> list[int]:
    pid = os.getpid()
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _reap_leftovers(wait: float = LEFTOVER_WAIT_SECONDS) -> list[int]:
    """Stop and reap the processes torchrun left behind (now children of this subreaper)."""
    left = _children()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    pending = set(left)
    while pending:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pending.discard(pid)
        if not pending:
            break
        if time.monotonic() > deadline:
            for pid in pending:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in pending:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            break
        time.sleep(0.05)
    return left


def grace_seconds(env=os.environ) -> int:
    """The termination grace period from the environment (the pod spec sets it), else the default."""
    raw = env.get(GRACE_ENV, "")
    try:
        return int(raw) if raw.strip() else DEFAULT_GRACE_SECONDS
    except ValueError:
        raise ValueError(f"${GRACE_ENV}={raw!r}: seconds as a whole number") from None


def exit_status(returncode: int, got_sigterm: bool, run_dir: Path) -> tuple[int, str | None]:
    """The launcher's exit status after torchrun ended with `returncode`, and a line to log."""
    if returncode == 0:
        return 0, None
    record = read_preempted(run_dir)
    if record is not None:
        return PREEMPTED_EXIT_CODE, (
            f"{preempted_message(record.get('step'), record.get('checkpoint'))} "
            f"(the trainer or torchrun exited {returncode})"
        )
    if got_sigterm and not (run_dir / FINISHED_FILE).exists():
        return PREEMPTED_EXIT_CODE, (
            f"{preempted_message('?', None)} (SIGTERM before the trainer could checkpoint; the retried run "
            f"resumes from the newest step checkpoint in {run_dir}; exit status {returncode})"
        )
    if got_sigterm:
        # The SIGTERM came after the trainer's last check: it exported, marked the run finished and reported
        # its metadata, and only torchrun's own exit (1 on any signal) says otherwise. Failing here would
        # fail the step, and a rerun would train the finished stage afresh.
        return 0, f"the stage had finished when SIGTERM came (torchrun exited {returncode}): nothing to retry"
    return returncode, None


def single_process_command(job_file: str | Path) -> list[str]:
    """The trainer as one plain process: `python -m lm_platform.training.train --job FILE`."""
    return [sys.executable, "-m", "lm_platform.training.train", "--job", str(job_file)]


def torchrun_command(job_file: str | Path, nproc_per_node: int, grace_seconds: int) -> list[str]:
    """torchrun running the trainer on `nproc_per_node` processes of this machine; its workers get the
    grace period (less a margin) to write their checkpoint after SIGTERM."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        f"--shutdown-timeout={shutdown_timeout(grace_seconds)}",
        "-m",
        "lm_platform.training.train",
        "--job",
        str(job_file),
    ]


def run(job_file: str | Path, nproc_per_node: int, env=None) -> int:
    env = dict(os.environ if env is None else env)
    store_cache.fill_paths(job_file)  # under an object-store root, a pod's empty disk gets it from the store
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    run_dir = Path(job["run_dir"])
    (run_dir / PREEMPTED_FILE).unlink(missing_ok=True)  # a record of an earlier attempt
    grace = grace_seconds(env)
    got_sigterm = False
    proc: subprocess.Popen | None = None

    def forward(signum, frame) -> None:
        nonlocal got_sigterm
        got_sigterm = True
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    subreaper = _become_subreaper()
    try:
        if nproc_per_node == 1:  # a SIGKILL of the launcher (a killed pod, a test) takes the trainer too
            linux = sys.platform.startswith("linux")
            proc = subprocess.Popen(
                single_process_command(job_file),
                env=env,
                preexec_fn=_die_with(os.getpid()) if linux else None,
            )
        else:
            proc = subprocess.Popen(torchrun_command(job_file, nproc_per_node, grace), env=env)
        if got_sigterm:  # arrived while torchrun was being started
            proc.send_signal(signal.SIGTERM)
        returncode = proc.wait()
        if subreaper:
            left = _reap_leftovers()
            if left:
                print(f"stopped {len(left)} worker process(es) torchrun left behind: {left}", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    status, line = exit_status(returncode, got_sigterm, run_dir)
    if line:
        print(line, flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    launch = TrainerLaunch.parse(argv)
    return run(launch.job_file, launch.nproc_per_node)


if __name__ == "__main__":
    sys.exit(main())
