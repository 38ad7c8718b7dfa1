"""lm-evaluation-harness on a model object, for tasks the user has locally.

Task YAML files live under `include_path` and name local data files (`dataset_path: json` with
`dataset_kwargs.data_files`); the model is wrapped in lm-eval's `HFLM` as it is, so nothing is downloaded
and the same weights are scored as by the platform's own benchmarks. lm-eval is imported only here.
"""

from __future__ import annotations

import os
from pathlib import Path


def hflm(model, tokenizer, batch_size: int = 8, add_bos: bool = True):
    """lm-eval's HF model wrapper around an already loaded model and tokenizer."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=add_bos)


def run_lm_eval(
    model,
    tokenizer,
    tasks: list[str] | tuple[str, ...],
    include_path: str | Path,
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    metric: str = "acc",
    log_samples: bool = False,
) -> dict:
    """Scores of `tasks` (found under `include_path`); the first task's `metric` is the headline score.

    Returns kind, metric, score, n, stderr, per_task ({task: {metric: value, ..., n}}) and, with
    `log_samples`, lm-eval's per-sample records under `samples`.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    include_path = Path(include_path).resolve()
    if not include_path.is_dir():
        raise FileNotFoundError(f"lm_eval include_path {include_path} is not a directory")
    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise ValueError(f"lm_eval: tasks {missing} are not defined under {include_path}")
    # Relative data_files in a task YAML are read from the task directory.
    cwd = os.getcwd()
    os.chdir(include_path)
    try:
        out = simple_evaluate(
            model=hflm(model, tokenizer, batch_size),
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=log_samples,
            bootstrap_iters=1000,  # means get the closed-form standard error; this bounds the rest
            verbosity="ERROR",
        )
    finally:
        os.chdir(cwd)
    per_task = {}
    for task in tasks:
        res = out["results"][task]
        row = {k.split(",")[0]: v for k, v in res.items() if "," in k and isinstance(v, int | float)}
        row["n"] = int(out.get("n-samples", {}).get(task, {}).get("effective", 0))
        per_task[task] = row
    head = per_task[tasks[0]]
    if metric not in head:
        raise ValueError(f"lm_eval: task '{tasks[0]}' has no metric '{metric}' (has: {sorted(head)})")
    result = {
        "kind": "lm_eval",
        "metric": f"{tasks[0]}:{metric}",
        "higher_is_better": True,
        "score": float(head[metric]),
        "n": head["n"],
        "stderr": float(head.get(f"{metric}_stderr", float("nan"))),
        "per_task": per_task,
    }
    if log_samples:
        result["samples"] = out["samples"]
    return result
