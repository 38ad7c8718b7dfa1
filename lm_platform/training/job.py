"""The trainer's job for one stage of a recipe (a `TrainJob`, written as JSON next to the checkpoint), and
the command that runs it (a plain process, or torchrun for several processes)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lm_platform.paths import Layout
from lm_platform.recipe.schema import Recipe
from lm_platform.training.config import TrainJob

# The trainer's exit status after SIGTERM once its step checkpoint is written (EX_TEMPFAIL: run it again to
# resume); equal to `lm_platform.training.train.PREEMPTED_EXIT_CODE` (that module imports torch).
PREEMPTED_EXIT_CODE = 75
# How `train.Preempted` begins (the trainer logs it last before exiting 75).
PREEMPTED_MESSAGE = "stopped by SIGTERM after step"
_EXIT_75 = re.compile(rf"\b(?:code|exit code|exit_code)[ :=]*{PREEMPTED_EXIT_CODE}\b", re.IGNORECASE)


# Left in the run directory by the trainer's rank 0 when it stops for SIGTERM (step and checkpoint).
PREEMPTED_FILE = "PREEMPTED"
# Seconds from SIGTERM to SIGKILL (the pod's terminationGracePeriodSeconds); the launcher gives torchrun's
# workers this time, less a margin, instead of torchrun's own 30 s shutdown timeout.
GRACE_ENV = "LM_PLATFORM_TERMINATION_GRACE_SECONDS"
DEFAULT_GRACE_SECONDS = 300
GRACE_MARGIN_SECONDS = 10


def write_preempted(run_dir: str | Path, step: int, checkpoint: str | Path | None) -> None:
    """Record in `run_dir` that the trainer stopped for SIGTERM after `step` (atomically)."""
    from lm_platform.atomic import write_json

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(
        Path(run_dir) / PREEMPTED_FILE,
        {"step": step, "checkpoint": str(checkpoint) if checkpoint else None},
    )


def read_preempted(run_dir: str | Path) -> dict | None:
    """The trainer's preemption record in `run_dir`, or None."""
    import json

    f = Path(run_dir) / PREEMPTED_FILE
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def shutdown_timeout(grace_seconds: int) -> int:
    """How long torchrun lets its workers finish after SIGTERM: the grace period less a margin for
    torchrun and the launcher to exit (at least 1 s)."""
    return max(1, grace_seconds - GRACE_MARGIN_SECONDS)


def preempted(error: BaseException | str) -> bool:
    """Whether a trainer failure is a preemption (exit status 75 after writing a checkpoint): a subprocess
    launcher's error names the exit status ("failed with code 75"); a pod's error (dagster_k8s names no
    exit code) carries the pod's last log lines, which end with the trainer's `Preempted` message."""
    text = str(error)
    return bool(_EXIT_75.search(text)) or PREEMPTED_MESSAGE in text


def make_job(recipe: Recipe, stage_name: str, layout: Layout) -> TrainJob:
    """The stage's `train` section plus where its data, tokenizer and outputs are and how its model starts.
    The stage's `blend` and `pack` sections stay out: they shape the data, which the trainer reads from the
    packed dataset, and they must not change the fingerprint a resume is matched on."""
    stage = recipe.stage(stage_name)
    if stage.init_from == "model":
        init = (
            {"kind": "pretrained", "path": recipe.model.base}
            if recipe.model.init == "pretrained"
            else {"kind": "scratch", "model": recipe.model.model_dump()}
        )
    else:
        init = {"kind": "pretrained", "path": str(layout.checkpoint(stage.init_from))}
    output = layout.checkpoint(stage.name)
    train = stage.train
    if stage.eval_every and not train.keep_every:
        # Step checkpoints the evaluations score (`eval_every`) are kept: keep_last never prunes them.
        train = train.model_copy(update={"keep_every": stage.eval_every})
    return TrainJob(
        recipe=recipe.name,
        stage=stage.name,
        dataset_dir=str(layout.dataset(stage.name)),
        tokenizer_dir=str(layout.tokenizer()),
        output_dir=str(output),
        run_dir=str(output.with_name(f"{output.name}.run")),
        init=init,
        model={"eeve_tied_rule": recipe.model.eeve_tied_rule},
        generation=recipe.generation.model_dump(),
        train=train,
    )


def trainer_command(job_file: str | Path, nproc_per_node: int = 1) -> list[str]:
    """The launcher (`python -m lm_platform.training.launch`), which runs the trainer: directly for one
    process, through torchrun for several. It handles SIGTERM from its first moments (before the trainer
    has imported torch), gives torchrun's workers the grace period and turns a preempted run's exit
    (torchrun's 1 after SIGTERM) into 75."""
    return [
        sys.executable,
        "-m",
        "lm_platform.training.launch",
        f"--nproc_per_node={nproc_per_node}",
        "--job",
        str(job_file),
    ]


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
