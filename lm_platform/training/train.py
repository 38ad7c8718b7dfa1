"""The trainer: one program, one contract.

    python -m lm_platform.training.train --job job.json

It reads a packed dataset and a stage's job description, trains, writes an HF checkpoint (safetensors,
config, tokenizer) plus metrics atomically to the output directory, and reports through Dagster Pipes
when Dagster launched it (a `PipesSubprocessClient` locally, a Kubernetes pod in production). Run by
hand, it logs to stdout and does the same work.

Job fields: stage, dataset_dir, tokenizer_dir, output_dir, init ({"kind": "scratch", "model": {...}}
or {"kind": "pretrained", "path": ...}), train (the stage's optimisation settings).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lm_platform.atomic import atomic_dir, read_json, write_json
from lm_platform.data.pack import load_split
from lm_platform.modeling.init import build_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


class Reporter:
    """Logs progress; under Dagster Pipes also forwards logs and the final materialization."""

    def __init__(self) -> None:
        self.pipes = None
        if "DAGSTER_PIPES_CONTEXT" in os.environ:
            from dagster_pipes import open_dagster_pipes

            self._ctx = open_dagster_pipes()
            self.pipes = self._ctx.__enter__()

    def log(self, msg: str) -> None:
        print(msg, flush=True)
        if self.pipes is not None:
            self.pipes.log.info(msg)

    def materialize(self, metadata: dict[str, Any]) -> None:
        if self.pipes is not None:
            self.pipes.report_asset_materialization(metadata=metadata)

    def close(self, exc: BaseException | None = None) -> None:
        if self.pipes is not None:
            self._ctx.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)


def lr_at(step: int, total: int, cfg: dict[str, Any]) -> float:
    """Learning rate at `step` (0-based): linear warmup, then the stage's schedule down to min_lr."""
    peak, floor = cfg["lr"], cfg["lr"] * cfg["min_lr_ratio"]
    warmup = cfg["warmup_steps"]
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg["schedule"] == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    if cfg["schedule"] == "linear":
        return peak + (floor - peak) * progress
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_tensors(rows: np.ndarray, pad_id: int):
    import torch

    data = torch.from_numpy(rows.astype(np.int64))
    inputs, labels = data[:, :-1].clone(), data[:, 1:].clone()
    labels[labels == pad_id] = -100
    inputs[inputs == pad_id] = 0 if pad_id != 0 else 1
    return inputs, labels


def evaluate_loss(model, rows: np.ndarray, pad_id: int, batch_size: int) -> float:
    """Mean token loss over `rows` (no grad)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            inputs, labels = batch_tensors(np.asarray(rows[i : i + batch_size]), pad_id)
            logits = model(input_ids=inputs).logits
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total += loss.item()
            count += int((labels != -100).sum())
    model.train()
    return total / max(count, 1)


def train(job: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    import torch

    cfg = job["train"]
    if cfg.get("trainable", "all") != "all":
        raise NotImplementedError(
            f"stage {job['stage']}: trainable policy '{cfg['trainable']}' is not implemented by this trainer yet; "
            "only 'all' runs today"
        )
    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)))
    index = read_json(Path(job["dataset_dir"]) / "index.json")
    train_rows = load_split(job["dataset_dir"], "train")
    val_rows = load_split(job["dataset_dir"], "val")
    if len(train_rows) == 0:
        raise ValueError(f"dataset {job['dataset_dir']} has no training rows")
    pad_id = index["pad_id"]
    model = build_model(
        job["init"], index["vocab_size"], index["bos_id"], index["eos_id"], pad_id, cfg["seed"]
    )
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"],
        betas=(0.9, 0.95),
    )
    micro, accum = cfg["micro_batch_size"], cfg["grad_accum"]
    tokens_per_step = micro * accum * index["seq_len"]
    steps = max(1, math.ceil(cfg["epochs"] * len(train_rows) / (micro * accum)))
    eval_rows = val_rows if len(val_rows) else train_rows[: micro * 4]
    initial_val = evaluate_loss(model, eval_rows, pad_id, micro)
    reporter.log(
        f"[{job['stage']}] {sum(p.numel() for p in model.parameters()):,} params, {len(train_rows)} train rows, "
        f"{steps} steps of {tokens_per_step} tokens, initial val loss {initial_val:.4f}"
    )
    rng = np.random.default_rng(cfg["seed"])
    order = rng.permutation(len(train_rows))
    cursor = 0
    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    tokens_seen = 0
    model.train()
    for step in range(steps):
        lr = lr_at(step, steps, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for _ in range(accum):
            if cursor + micro > len(order):
                order, cursor = rng.permutation(len(train_rows)), 0
            idx = np.sort(order[cursor : cursor + micro])
            cursor += micro
            inputs, labels = batch_tensors(np.asarray(train_rows[idx]), pad_id)
            logits = model(input_ids=inputs).logits
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100
            )
            (loss / accum).backward()
            step_loss += loss.item() / accum
            tokens_seen += int((labels != -100).sum())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        curve.append({"step": step + 1, "loss": step_loss, "lr": lr, "grad_norm": grad_norm})
        if (step + 1) % cfg["log_every"] == 0 or step + 1 == steps:
            reporter.log(
                f"[{job['stage']}] step {step + 1}/{steps} loss {step_loss:.4f} lr {lr:.2e} "
                f"grad_norm {grad_norm:.3f} {tokens_seen / elapsed:,.0f} tok/s"
            )
    elapsed = time.perf_counter() - start
    final_val = evaluate_loss(model, eval_rows, pad_id, micro)
    metrics = {
        "stage": job["stage"],
        "steps": steps,
        "tokens_seen": tokens_seen,
        "tokens_per_step": tokens_per_step,
        "initial_val_loss": initial_val,
        "final_val_loss": final_val,
        "final_train_loss": curve[-1]["loss"],
        "tokens_per_second": tokens_seen / elapsed,
        "train_seconds": elapsed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": "cpu",
        "host": platform.node(),
        "curve": curve,
    }
    save_checkpoint(model, job, metrics)
    reporter.log(f"[{job['stage']}] val loss {initial_val:.4f} -> {final_val:.4f}; saved {job['output_dir']}")
    return metrics


def save_checkpoint(model, job: dict[str, Any], metrics: dict[str, Any]) -> None:
    """HF directory (config, safetensors, tokenizer) plus metrics, written atomically."""
    with atomic_dir(job["output_dir"]) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            src = Path(job["tokenizer_dir"]) / name
            if src.exists():
                shutil.copy(src, tmp / name)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "job.json", job)


def loss_curve_markdown(curve: list[dict[str, float]], points: int = 20) -> str:
    stride = max(1, len(curve) // points)
    rows = curve[::stride] + ([curve[-1]] if (len(curve) - 1) % stride else [])
    lines = ["| step | loss | lr |", "|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['loss']:.4f} | {r['lr']:.2e} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job", required=True, help="JSON file describing the training job")
    args = parser.parse_args(argv)
    job = json.loads(Path(args.job).read_text(encoding="utf-8"))
    reporter = Reporter()
    try:
        metrics = train(job, reporter)
        reporter.materialize(
            {
                "path": {"raw_value": job["output_dir"], "type": "path"},
                "steps": {"raw_value": metrics["steps"], "type": "int"},
                "tokens_seen": {"raw_value": metrics["tokens_seen"], "type": "int"},
                "initial_val_loss": {"raw_value": metrics["initial_val_loss"], "type": "float"},
                "final_val_loss": {"raw_value": metrics["final_val_loss"], "type": "float"},
                "final_train_loss": {"raw_value": metrics["final_train_loss"], "type": "float"},
                "tokens_per_second": {"raw_value": metrics["tokens_per_second"], "type": "float"},
                "parameters": {"raw_value": metrics["parameters"], "type": "int"},
                "ran_on": {"raw_value": f"{metrics['device']} on {metrics['host']}", "type": "text"},
                "loss_curve": {"raw_value": loss_curve_markdown(metrics["curve"]), "type": "md"},
            }
        )
    except BaseException as exc:
        reporter.close(exc)
        raise
    reporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
