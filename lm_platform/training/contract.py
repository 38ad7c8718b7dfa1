"""What the platform and the trainer agree on, in one place that both import (no torch, no pydantic):

- how one stage's trainer is launched: `TrainerLaunch` (the job file, the number of processes, the
  stage), the one value from which the local launcher's command, the launcher's own arguments and the
  Kubernetes pod (`deployment/pods.py`) are all made;
- how the trainer says it was preempted: exit status `PREEMPTED_EXIT_CODE` (75, EX_TEMPFAIL: run it
  again to resume), the `PREEMPTED` record in its run directory (step and checkpoint), and the message
  that starts with `PREEMPTED_MESSAGE`, which the trainer logs last (a pod's error carries its last log
  lines, not its exit status);
- the `FINISHED` marker of a run whose stage finished, and the termination grace period a pod gives
  the launcher (`GRACE_ENV`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from lm_platform.atomic import write_json

LAUNCH_MODULE = "lm_platform.training.launch"

# The trainer's exit status after SIGTERM once its step checkpoint is written.
PREEMPTED_EXIT_CODE = 75
PREEMPTED_MESSAGE = "stopped by SIGTERM after step"
# Left in the run directory by the trainer's rank 0 when it stops for SIGTERM (step and checkpoint).
PREEMPTED_FILE = "PREEMPTED"
# Left in the run directory when the stage finished (export written): a SIGTERM after it is no preemption.
FINISHED_FILE = "FINISHED"
_EXIT_75 = re.compile(rf"\b(?:code|exit code|exit_code)[ :=]*{PREEMPTED_EXIT_CODE}\b", re.IGNORECASE)

# Seconds from SIGTERM to SIGKILL (the pod's terminationGracePeriodSeconds); the launcher gives torchrun's
# workers this time, less a margin, instead of torchrun's own 30 s shutdown timeout.
GRACE_ENV = "LM_PLATFORM_TERMINATION_GRACE_SECONDS"
DEFAULT_GRACE_SECONDS = 300
GRACE_MARGIN_SECONDS = 10


@dataclass(frozen=True)
class TrainerLaunch:
    """One stage's trainer launch: `python -m lm_platform.training.launch`, which runs the trainer on
    `nproc_per_node` processes (directly for one, through torchrun for several) from the `TrainJob` in
    `job_file`."""

    job_file: str
    nproc_per_node: int
    stage: str

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1:
            raise ValueError(
                f"stage {self.stage!r}: nproc_per_node must be at least 1, got {self.nproc_per_node}"
            )

    def args(self) -> list[str]:
        """The launcher's arguments (what `parse` reads back)."""
        return [f"--nproc_per_node={self.nproc_per_node}", f"--stage={self.stage}", "--job", self.job_file]

    def command(self, python: str = sys.executable) -> list[str]:
        """The whole command, with this process's interpreter or the one `python` names (a pod's image)."""
        return [python, "-m", LAUNCH_MODULE, *self.args()]

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> TrainerLaunch:
        parser = argparse.ArgumentParser(prog=f"python -m {LAUNCH_MODULE}", description=cls.__doc__)
        parser.add_argument("--nproc_per_node", "--nproc-per-node", type=int, required=True)
        parser.add_argument("--stage", default="")
        parser.add_argument("--job", required=True, help="JSON file describing the training job (a TrainJob)")
        args = parser.parse_args(argv)
        return cls(args.job, args.nproc_per_node, args.stage)

    def as_extras(self) -> dict[str, dict]:
        """The launch as Pipes extras (how a Dagster Pipes client that starts a pod receives it)."""
        return {"launch": asdict(self)}

    @classmethod
    def from_extras(cls, extras) -> TrainerLaunch:
        if not extras or "launch" not in extras:
            raise ValueError("no trainer launch in the Pipes extras (pass TrainerLaunch.as_extras())")
        return cls(**extras["launch"])


def preempted_message(step: int | str, checkpoint) -> str:
    """The line the trainer (and the launcher, for it) logs last when it stops for SIGTERM."""
    return f"{PREEMPTED_MESSAGE} {step}; checkpoint {checkpoint}"


def write_preempted(run_dir: str | Path, step: int, checkpoint: str | Path | None) -> None:
    """Record in `run_dir` that the trainer stopped for SIGTERM after `step` (atomically)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(
        Path(run_dir) / PREEMPTED_FILE,
        {"step": step, "checkpoint": str(checkpoint) if checkpoint else None},
    )


def read_preempted(run_dir: str | Path) -> dict | None:
    """The trainer's preemption record in `run_dir`, or None."""
    try:
        return json.loads((Path(run_dir) / PREEMPTED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def preempted(error: BaseException | str) -> bool:
    """Whether a trainer failure is a preemption: a subprocess launcher's error names the exit status
    ("failed with code 75"); a pod's error (dagster_k8s names no exit code) carries the pod's last log
    lines, which end with the preemption message."""
    text = str(error)
    return bool(_EXIT_75.search(text)) or PREEMPTED_MESSAGE in text


def shutdown_timeout(grace_seconds: int) -> int:
    """How long torchrun lets its workers finish after SIGTERM: the grace period less a margin for
    torchrun and the launcher to exit (at least 1 s)."""
    return max(1, grace_seconds - GRACE_MARGIN_SECONDS)
