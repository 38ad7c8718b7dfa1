"""The trainer: one program, one contract.

    python -m lm_platform.training.train --job job.json
    torchrun --nproc_per_node 2 -m lm_platform.training.train --job job.json     # DDP

It reads a packed dataset and a stage's job description, trains, writes step checkpoints (HF model plus
optimizer, schedule, RNG and data position) to `run_dir` and the final checkpoint to `output_dir`, all
atomically, and reports through Dagster Pipes when Dagster launched it (a `PipesSubprocessClient`
locally, a Kubernetes pod in production). Started again after a kill, it resumes from the newest step
checkpoint of the same job and ends with the weights an uninterrupted run would have.

Job fields: stage, dataset_dir, tokenizer_dir, output_dir, run_dir, init ({"kind": "scratch", "model":
{...}} or {"kind": "pretrained", "path": ...}), model (tied-embedding rule), generation (prompts and
sampling), train (the stage's optimisation settings; see `StageConfig`).
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
from lm_platform.modeling.eeve import read_eeve
from lm_platform.modeling.freeze import apply_policy
from lm_platform.modeling.init import build_model
from lm_platform.training import checkpoint as ckpt
from lm_platform.training.metrics import (
    generate_samples,
    loss_curve_markdown,
    loss_curve_png,
    png_markdown,
    samples_markdown,
)

# Dense bf16 peak FLOP/s per GPU, for MFU (name fragment -> FLOP/s).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


class Reporter:
    """Logs progress (stdout and a JSONL log); on rank 0 under Dagster Pipes also forwards logs and the
    final materialization."""

    def __init__(self, rank: int = 0) -> None:
        self.pipes = None
        self.rank = rank
        self.log_file: Path | None = None
        if rank == 0 and "DAGSTER_PIPES_CONTEXT" in os.environ:
            from dagster_pipes import open_dagster_pipes

            self._ctx = open_dagster_pipes()
            self.pipes = self._ctx.__enter__()

    def log(self, msg: str, **record: Any) -> None:
        if self.rank != 0:
            return
        print(msg, flush=True)
        if self.pipes is not None:
            self.pipes.log.info(msg)
        if record and self.log_file is not None:
            with self.log_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def materialize(self, metadata: dict[str, Any]) -> None:
        if self.pipes is not None:
            self.pipes.report_asset_materialization(metadata=metadata)

    def close(self, exc: BaseException | None = None) -> None:
        if self.pipes is not None:
            self._ctx.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)


# ---------------------------------------------------------------------------------------------------------
# Components: schedule, data order, distributed setup, loss


def lr_at(step: int, total: int, cfg: dict[str, Any]) -> float:
    """Learning rate at `step` (0-based): linear warmup, then the stage's schedule down to min_lr."""
    peak, floor = cfg["lr"], cfg["lr"] * cfg["min_lr_ratio"]
    warmup = cfg["warmup_steps"]
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg["schedule"] == "constant":
        return peak
    if cfg["schedule"] == "wsd":  # warmup, stable at the peak, then a linear decay over the last steps
        decay_steps = max(1, round(cfg.get("wsd_decay_fraction", 0.2) * (total - warmup)))
        decay_start = total - decay_steps
        if step < decay_start:
            return peak
        return peak + (floor - peak) * min(1.0, (step - decay_start + 1) / decay_steps)
    progress = (step - warmup) / max(1, total - warmup)
    if cfg["schedule"] == "linear":
        return peak + (floor - peak) * progress
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class DataOrder:
    """Which rows each global step reads: a fresh seeded permutation per epoch, consumed in global
    batches; the position (epoch, cursor) is all a checkpoint needs to continue exactly."""

    def __init__(self, n_rows: int, global_rows: int, seed: int, epoch: int = 0, cursor: int = 0):
        if n_rows < global_rows:
            raise ValueError(
                f"the dataset has {n_rows} training rows, fewer than one global batch of {global_rows} "
                "(micro_batch_size x grad_accum x processes)"
            )
        self.n, self.global_rows, self.seed = n_rows, global_rows, seed
        self.epoch, self.cursor = epoch, cursor
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next_step(self) -> np.ndarray:
        """Row ids of the next global step, in (micro-step, rank, row) order."""
        if self.cursor + self.global_rows > self.n:
            self.epoch, self.cursor = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        rows = self._order[self.cursor : self.cursor + self.global_rows]
        self.cursor += self.global_rows
        return rows

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}


class Dist:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""

    def __init__(self) -> None:
        import torch

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        if self.world > 1:
            import torch.distributed as td

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            td.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    def mean(self, value: float) -> float:
        return self.sum(value) / self.world

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch
        import torch.distributed as td

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        td.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.destroy_process_group()


def batch_tensors(rows: np.ndarray, pad_id: int, device=None):
    import torch

    data = torch.from_numpy(rows.astype(np.int64))
    inputs, labels = data[:, :-1].clone(), data[:, 1:].clone()
    labels[labels == pad_id] = -100
    inputs[inputs == pad_id] = 0 if pad_id != 0 else 1
    return (inputs, labels) if device is None else (inputs.to(device), labels.to(device))


def token_loss(model, inputs, labels, reduction: str = "mean"):
    import torch

    logits = model(input_ids=inputs).logits
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=-100,
        reduction=reduction,
    )


def evaluate_loss(model, rows: np.ndarray, pad_id: int, batch_size: int, device=None) -> float:
    """Mean token loss over `rows` (no grad)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(rows), batch_size):
            inputs, labels = batch_tensors(np.asarray(rows[i : i + batch_size]), pad_id, device)
            total += token_loss(model, inputs, labels, reduction="sum").item()
            count += int((labels != -100).sum())
    model.train(was_training)
    return total / max(count, 1)


def _autocast(device):
    """bf16 autocast on GPU; fp32 (no autocast) on CPU."""
    import contextlib

    import torch

    if device is not None and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def planned_steps(cfg: dict[str, Any], train_rows: int, seq_len: int, world: int) -> tuple[int, int]:
    """(steps, rows per global step): from the token budget when set, else from `epochs` passes."""
    global_rows = cfg["micro_batch_size"] * cfg["grad_accum"] * world
    if cfg.get("token_budget"):
        return max(1, math.ceil(cfg["token_budget"] / (global_rows * seq_len))), global_rows
    return max(1, math.ceil(cfg["epochs"] * train_rows / global_rows)), global_rows


# ---------------------------------------------------------------------------------------------------------
# The stage


def train(
    job: dict[str, Any], reporter: Reporter | None = None, stop_after: int | None = None
) -> dict[str, Any]:
    """Run (or resume) one stage; returns its metrics. `stop_after` ends early after that many steps of
    this process (for benchmarks; no final checkpoint is written then)."""
    import torch

    cfg = job["train"]
    dist = Dist()
    reporter = reporter or Reporter(dist.rank)
    device = dist.device
    torch.manual_seed(cfg["seed"])
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8) // dist.world))

    # Data: packed rows, steps derived from the budget.
    index = read_json(Path(job["dataset_dir"]) / "index.json")
    train_rows = load_split(job["dataset_dir"], "train")
    val_rows = load_split(job["dataset_dir"], "val")
    if len(train_rows) == 0:
        raise ValueError(f"dataset {job['dataset_dir']} has no training rows")
    pad_id, seq_len = index["pad_id"], index["seq_len"]
    micro, accum = cfg["micro_batch_size"], cfg["grad_accum"]
    steps, global_rows = planned_steps(cfg, len(train_rows), seq_len, dist.world)
    eval_rows = val_rows if len(val_rows) else train_rows[: micro * 4]

    # Model: the newest checkpoint of this very run, else the stage's init (EEVE extension included).
    run_dir = Path(job.get("run_dir") or f"{job['output_dir']}.run")
    fp = ckpt.fingerprint(job)
    resume = ckpt.latest(run_dir, fp) if dist.rank == 0 else None  # rank 0 also clears stale ones
    dist.barrier()
    if dist.rank != 0:
        resume = ckpt.latest(run_dir, fp)
    init = {"kind": "pretrained", "path": str(resume)} if resume else job["init"]
    tied_rule = job.get("model", {}).get("eeve_tied_rule", "input")
    model = build_model(
        init,
        index["vocab_size"],
        index["bos_id"],
        index["eos_id"],
        index.get("model_pad_id"),
        cfg["seed"],
        job["tokenizer_dir"],
        tied_rule,
    ).to(device)
    eeve = read_eeve(job["tokenizer_dir"])
    plan = apply_policy(model, cfg.get("trainable", "all"), eeve.base_vocab_size if eeve else None)
    # Fused AdamW (one kernel for all tensors, on CPU and GPU); frozen rows keep a zero update all the same.
    optimizer = torch.optim.AdamW(
        plan.param_groups(cfg["weight_decay"]), lr=cfg["lr"], betas=(0.9, 0.95), fused=True
    )

    state: dict[str, Any] = {"fingerprint": fp, "step": 0, "tokens_seen": 0, "curve": [], "data": {}}
    if resume:
        state = ckpt.load_into(resume, optimizer)
    else:
        state["initial_val_loss"] = evaluate_loss(model, eval_rows, pad_id, micro, device)
    data = DataOrder(len(train_rows), global_rows, cfg["seed"], **state["data"])
    ddp_model = model
    if dist.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if dist.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        reporter.log_file = run_dir / "log.jsonl"
        if not resume:
            reporter.log_file.unlink(missing_ok=True)
    reporter.log(
        f"[{job['stage']}] {sum(p.numel() for p in model.parameters()):,} params "
        f"({plan.trainable_parameters:,} trainable, policy {cfg.get('trainable', 'all')}), "
        f"{len(train_rows)} train rows, {steps} steps of {global_rows * seq_len} tokens on {dist.world} x "
        f"{device.type}, initial val loss {state['initial_val_loss']:.4f}"
        + (f"; resumed from {resume.name}" if resume else "")
    )

    saved = {"step": state["step"] if resume else -1, "path": resume}

    def save_step_checkpoint() -> Path:
        path = run_dir / f"step_{state['step']:08d}"
        saved.update(step=state["step"], path=path)
        if dist.rank == 0:
            samples = _samples(model, job, device)
            state["data"] = data.position()
            ckpt.save(path, model, optimizer, state, job["tokenizer_dir"], {"samples.json": samples})
            ckpt.prune(run_dir, cfg.get("keep_last", 2))
            reporter.log(f"[{job['stage']}] checkpoint {path.name}")
        dist.barrier()
        return path

    # The loop.
    model.train()
    every = cfg.get("checkpoint_every")
    n_params = sum(p.numel() for p in model.parameters())
    session_tokens, session_start, ran = 0, time.perf_counter(), 0
    while state["step"] < steps and (stop_after is None or ran < stop_after):
        step = state["step"]
        t0 = time.perf_counter()
        lr = lr_at(step, steps, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = data.next_step()
        step_loss, step_tokens = 0.0, 0
        for m in range(accum):
            start = (m * dist.world + dist.rank) * micro
            idx = np.sort(rows[start : start + micro])
            inputs, labels = batch_tensors(np.asarray(train_rows[idx]), pad_id, device)
            sync = m == accum - 1 or dist.world == 1
            ctx = ddp_model.no_sync() if not sync else _nullcontext()
            with ctx:
                with _autocast(device):  # the forward in bf16 on GPU; backward outside autocast
                    loss = token_loss(ddp_model, inputs, labels)
                (loss / accum).backward()
            step_loss += loss.item() / accum
            step_tokens += int((labels != -100).sum())
        plan.mask_grads()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(plan.parameters(), 1.0))
        plan.decay_rows(lr, cfg["weight_decay"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_loss, step_tokens = dist.mean(step_loss), int(dist.sum(step_tokens))
        seconds = time.perf_counter() - t0
        state["step"] += 1
        state["tokens_seen"] += step_tokens
        session_tokens += step_tokens
        ran += 1
        record = {
            "step": state["step"],
            "loss": step_loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": step_tokens,
            "seconds": seconds,
            "elapsed": time.perf_counter() - session_start,
        }
        state["curve"].append(record)
        if state["step"] % cfg["log_every"] == 0 or state["step"] == steps:
            tps = session_tokens / (time.perf_counter() - session_start)
            mfu = _mfu(n_params, tps, device, dist.world)
            reporter.log(
                f"[{job['stage']}] step {state['step']}/{steps} loss {step_loss:.4f} lr {lr:.2e} "
                f"grad_norm {grad_norm:.3f} {tps:,.0f} tok/s" + (f" MFU {mfu:.1%}" if mfu else ""),
                **record,
                tokens_per_second=tps,
            )
        if every and state["step"] % every == 0 and state["step"] < steps:
            save_step_checkpoint()
    elapsed = time.perf_counter() - session_start

    metrics = {
        "stage": job["stage"],
        "steps": steps,
        "steps_run": ran,
        "resumed_from": resume.name if resume else None,
        "tokens_seen": state["tokens_seen"],
        "tokens_per_step": global_rows * seq_len,
        "initial_val_loss": state["initial_val_loss"],
        "final_train_loss": state["curve"][-1]["loss"] if state["curve"] else float("nan"),
        "tokens_per_second": session_tokens / elapsed if ran else state.get("tokens_per_second", 0.0),
        "train_seconds": elapsed,
        "parameters": n_params,
        "trainable_parameters": plan.trainable_parameters,
        "trainable": cfg.get("trainable", "all"),
        "processes": dist.world,
        "device": device.type if dist.world == 1 else f"{dist.world} x {device.type}",
        "host": platform.node(),
        "curve": state["curve"],
    }
    if stop_after is not None and state["step"] < steps:
        dist.close()
        return metrics
    state["tokens_per_second"] = metrics["tokens_per_second"]
    final = saved["path"] if saved["step"] == steps else save_step_checkpoint()
    metrics["final_val_loss"] = evaluate_loss(model, eval_rows, pad_id, micro, device)
    metrics["mfu"] = _mfu(n_params, metrics["tokens_per_second"], device, dist.world)
    if dist.rank == 0:
        export(final, job, metrics)
        ckpt.mark_finished(run_dir)
        reporter.log(
            f"[{job['stage']}] val loss {metrics['initial_val_loss']:.4f} -> {metrics['final_val_loss']:.4f}; "
            f"saved {job['output_dir']}"
        )
    dist.barrier()
    dist.close()
    return metrics


def export(step_dir: Path, job: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The stage's checkpoint: the last step checkpoint plus metrics, job and loss curve, atomically."""
    with atomic_dir(job["output_dir"]) as tmp:
        for f in step_dir.iterdir():
            shutil.copy2(f, tmp / f.name)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "job.json", job)
        png = loss_curve_png(metrics["curve"], f"{job['stage']}: training loss")
        if png:
            (tmp / "loss_curve.png").write_bytes(png)


def _samples(model, job: dict[str, Any], device) -> list[dict[str, str]]:
    gen = job.get("generation") or {}
    if not gen.get("prompts"):
        return []
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(job["tokenizer_dir"])
    return generate_samples(model, tok, gen, device)


def _mfu(n_params: int, tokens_per_second: float, device, world: int) -> float | None:
    """Model FLOPs utilisation on GPU (6 N FLOPs per token against the device's bf16 peak)."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    return 6 * n_params * tokens_per_second / (peak * world) if peak else None


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def materialization_metadata(job: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """What `checkpoint/<stage>` shows in Dagster (Pipes metadata: raw values with their types)."""
    out = Path(job["output_dir"])
    samples = read_json(out / "samples.json") if (out / "samples.json").exists() else []
    meta = {
        "path": {"raw_value": job["output_dir"], "type": "path"},
        "steps": {"raw_value": metrics["steps"], "type": "int"},
        "tokens_seen": {"raw_value": metrics["tokens_seen"], "type": "int"},
        "initial_val_loss": {"raw_value": metrics["initial_val_loss"], "type": "float"},
        "final_val_loss": {"raw_value": metrics["final_val_loss"], "type": "float"},
        "final_train_loss": {"raw_value": metrics["final_train_loss"], "type": "float"},
        "tokens_per_second": {"raw_value": metrics["tokens_per_second"], "type": "float"},
        "parameters": {"raw_value": metrics["parameters"], "type": "int"},
        "trainable_parameters": {"raw_value": metrics["trainable_parameters"], "type": "int"},
        "trainable": {"raw_value": metrics["trainable"], "type": "text"},
        "ran_on": {"raw_value": f"{metrics['device']} on {metrics['host']}", "type": "text"},
        "loss_curve": {"raw_value": loss_curve_markdown(metrics["curve"]), "type": "md"},
        "samples": {"raw_value": samples_markdown(samples), "type": "md"},
    }
    if metrics.get("resumed_from"):
        meta["resumed_from"] = {"raw_value": metrics["resumed_from"], "type": "text"}
    if metrics.get("mfu") is not None:
        meta["mfu"] = {"raw_value": metrics["mfu"], "type": "float"}
    if (out / "loss_curve.png").exists():
        meta["loss_curve_plot"] = {
            "raw_value": png_markdown((out / "loss_curve.png").read_bytes(), "loss curve"),
            "type": "md",
        }
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job", required=True, help="JSON file describing the training job")
    args = parser.parse_args(argv)
    job = json.loads(Path(args.job).read_text(encoding="utf-8"))
    reporter = Reporter(int(os.environ.get("RANK", "0")))
    try:
        metrics = train(job, reporter)
        if reporter.rank == 0:
            reporter.materialize(materialization_metadata(job, metrics))
    except BaseException as exc:
        reporter.close(exc)
        raise
    reporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
