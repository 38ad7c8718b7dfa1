"""The trainer: one program, one contract.

    python -m lm_platform.training.train --job job.json
    torchrun --nproc_per_node 2 -m lm_platform.training.train --job job.json     # DDP

It reads a packed dataset and a stage's job file (a `TrainJob`, validated before any work), trains,
writes step checkpoints (fp32 HF model plus optimizer, schedule, RNG and data position) to `run_dir` and
exports the last one to `output_dir` (in the model's dtype, hard-linking the step's other files), all
atomically and durably, and reports through Dagster Pipes when Dagster launched it (a
`PipesSubprocessClient` locally, a Kubernetes pod in production). Started again after a kill, it resumes
from the newest step checkpoint of the same run identity and ends with the weights an uninterrupted run
would have. On SIGTERM (spot preemption, pod eviction) it finishes the step in flight, writes a step
checkpoint there and exits with `PREEMPTED_EXIT_CODE` (75, EX_TEMPFAIL: try again); a SIGTERM during
setup or finish ends the same way at the phase's next boundary. Rank 0 also leaves `PREEMPTED` in
`run_dir`, which the launcher (`training/launch.py`, in front of torchrun) reads, since torchrun exits 1
after a SIGTERM whatever its workers did.

Read top to bottom: the parts (schedule, data order, batches and the per-token loss, distributed setup),
then the stage in three phases: `setup` (data, model, optimizer, resume), `run_loop` (the steps) and
`finish` (final checkpoint, export, metrics). `TrainState` is everything a step checkpoint restores
besides weights, optimizer and RNG.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as td
from dagster_pipes import open_dagster_pipes
from transformers import AutoConfig, AutoTokenizer

from lm_platform.atomic import read_json
from lm_platform.data.blending.pack import SplitReader
from lm_platform.modeling.eeve import read_eeve
from lm_platform.modeling.freeze import TrainablePlan, apply_policy
from lm_platform.modeling.init import build_model
from lm_platform.storage import cache as store_cache
from lm_platform.training import checkpoint as ckpt
from lm_platform.training import flops, parallel
from lm_platform.training.config import ModelInit, PretrainedInit, TrainConfig, TrainJob
from lm_platform.training.contract import (
    PREEMPTED_EXIT_CODE,
    PREEMPTED_FILE,
    preempted_message,
    write_preempted,
)
from lm_platform.training.dataloader import Prefetcher
from lm_platform.training.loss import fused_head, hidden_states, linear_cross_entropy
from lm_platform.training.metrics import (
    generate_samples,
    loss_curve_markdown,
    loss_curve_png,
    png_markdown,
    samples_markdown,
)
from lm_platform.versions import content_version

# Exit status after SIGTERM once the step checkpoint is written (EX_TEMPFAIL: run it again to resume).
IGNORE = -100  # label of a token the loss skips (padding, masked prompt tokens)


class Reporter:
    """Logs progress (stdout and a JSONL log); on rank 0 under Dagster Pipes also forwards logs and the
    final materialization."""

    def __init__(self, rank: int = 0) -> None:
        self.pipes = None
        self.rank = rank
        self.log_file: Path | None = None
        if rank == 0 and "DAGSTER_PIPES_CONTEXT" in os.environ:
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

    def materialize(self, metadata: dict[str, Any], data_version: str | None = None) -> None:
        if self.pipes is not None:
            self.pipes.report_asset_materialization(metadata=metadata, data_version=data_version)

    def close(self, exc: BaseException | None = None) -> None:
        if self.pipes is not None:
            self._ctx.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)


class Preempted(Exception):
    """SIGTERM arrived: a step checkpoint was written at `step`; running the job again resumes there."""

    def __init__(self, step: int, path: Path | None) -> None:
        super().__init__(preempted_message(step, path))
        self.step, self.path = step, path


# ---------------------------------------------------------------------------------------------------------
# Parts: schedule, data order, batches and loss, distributed setup


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate at `step` (0-based) of `total`: linear warmup, then the stage's schedule, which reaches
    min_lr (lr x min_lr_ratio) on the last step, `total - 1`."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    warmup = cfg.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "wsd":  # warmup, stable at the peak, then a linear decay over the last steps
        decay_steps = max(1, round(cfg.wsd_decay_fraction * (total - warmup)))
        decay_start = total - decay_steps
        if step < decay_start:
            return peak
        return peak + (floor - peak) * min(1.0, (step - decay_start + 1) / decay_steps)
    span = total - 1 - warmup  # steps from the first after warmup to the last
    progress = 1.0 if span <= 0 else min(1.0, (step - warmup) / span)
    if cfg.schedule == "linear":
        return peak + (floor - peak) * progress
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class DataOrder:
    """Which rows each global step reads: a fresh seeded permutation per epoch, read as one stream in
    global batches (a batch that crosses an epoch's end continues with the next epoch's permutation, so no
    row of an epoch is skipped). With `total_rows` (epochs mode) the stream stops there: the last step may
    be short, and `epochs: 1` sees every row exactly once. The position (epoch, cursor, served) is all a
    checkpoint needs to continue exactly."""

    def __init__(
        self,
        n_rows: int,
        global_rows: int,
        seed: int,
        total_rows: int | None = None,
        epoch: int = 0,
        cursor: int = 0,
        served: int = 0,
    ):
        if n_rows <= 0:
            raise ValueError("the dataset has no training rows")
        self.n, self.global_rows, self.seed, self.total_rows = n_rows, global_rows, seed, total_rows
        self.epoch, self.cursor, self.served = epoch, cursor, served
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next_step(self) -> np.ndarray:
        """Row ids of the next global step, in (micro-step, rank, row) order."""
        want = self.global_rows
        if self.total_rows is not None:
            want = max(0, min(want, self.total_rows - self.served))
        parts = []
        while want > 0:
            if self.cursor == self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(want, self.n - self.cursor)
            parts.append(self._order[self.cursor : self.cursor + take])
            self.cursor += take
            want -= take
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        self.served += len(rows)
        return rows

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "served": self.served}


def planned_steps(cfg: TrainConfig, train_rows: int, seq_len: int, world: int) -> tuple[int, int, int | None]:
    """(steps, rows per global step, rows in all): from the token budget when set (full steps), else from
    `epochs` passes over the rows (the last step takes what is left)."""
    global_rows = cfg.micro_batch_size * cfg.grad_accum * world
    if cfg.token_budget:
        return max(1, math.ceil(cfg.token_budget / (global_rows * seq_len))), global_rows, None
    total = max(1, math.ceil(cfg.epochs * train_rows))
    return math.ceil(total / global_rows), global_rows, total


def batch_tensors(rows: np.ndarray, pad_id: int, mask: np.ndarray | None = None, device=None):
    """(inputs, labels) of packed rows: labels are the rows shifted by one, IGNORE where the label is
    padding or its loss mask is 0 (so masked tokens add nothing to the loss or the gradients)."""
    data = torch.from_numpy(np.asarray(rows).astype(np.int64))
    inputs, labels = data[:, :-1].clone(), data[:, 1:].clone()
    labels[labels == pad_id] = IGNORE
    if mask is not None:
        labels[torch.from_numpy(np.asarray(mask)[:, 1:] == 0)] = IGNORE
    inputs[inputs == pad_id] = 0 if pad_id != 0 else 1
    return (inputs, labels) if device is None else (inputs.to(device), labels.to(device))


def token_loss(model, inputs, labels, reduction: str = "mean"):
    """Cross-entropy of the next-token predictions of `model` (plain, DDP or FSDP) against `labels`
    (IGNORE skipped). A plain linear head goes through `linear_cross_entropy` (no [B, T, V] logits
    tensor, no logits for ignored positions); other heads compute the logits."""
    head = fused_head(model)
    if head is not None:
        hidden = hidden_states(model, head, inputs)
        return linear_cross_entropy(hidden, head.weight, labels, IGNORE, reduction)
    logits = model(input_ids=inputs).logits
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction=reduction,
    )


def micro_batches(
    reader: SplitReader, rows: np.ndarray, rank: int, world: int, accum: int, micro: int, pad_id: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's micro-batches of one global step (rows in (micro-step, rank, row) order). A micro-batch
    left empty by a short last step is one padding row: every rank still runs each backward (DDP)."""
    out = []
    for m in range(accum):
        start = (m * world + rank) * micro
        ids = np.sort(rows[start : start + micro])
        if len(ids):
            data, mask = reader.rows(ids)
        else:
            data, mask = np.full((1, reader.row_len), pad_id), None
        out.append(batch_tensors(data, pad_id, mask))
    return out


def step_gradients(model, batches, dist: Dist, device) -> tuple[torch.Tensor, int]:
    """Forward and backward over one optimizer step's micro-batches, leaving in `.grad` the gradient of the
    per-token mean loss over the whole step: every label token of every micro-batch of every rank weighs
    the same. Returns this rank's summed token loss (a tensor, not synced) and the step's token count."""
    tokens = sum(int((labels != IGNORE).sum()) for _, labels in batches)
    total = int(dist.sum(tokens))
    scale = dist.world / max(total, 1)  # DDP averages gradients over ranks: undo it, then divide by tokens
    loss_sum = torch.zeros((), device=device)
    for m, (inputs, labels) in enumerate(batches):
        inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        sync = m == len(batches) - 1 or dist.world == 1
        with contextlib.nullcontext() if sync else parallel.no_sync(model):
            with _autocast(device):  # the forward in bf16 on GPU; backward outside autocast
                loss = token_loss(model, inputs, labels, reduction="sum")
            (loss * scale).backward()
        loss_sum += loss.detach()
    return loss_sum, total


def clip_gradients(params, max_norm: float, sharded: bool = False) -> float:
    """`clip_grad_norm_` (same coefficient, same result), without its pass over every gradient when the
    coefficient is 1 (x * 1.0 is x): the norm is read on the host for the log anyway. Returns the norm."""
    params = list(params)
    if sharded:  # DTensor gradients: torch's own, with the norm gathered for the log
        return float(parallel.full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm)))
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.get_total_norm(grads)
    if float(max_norm / (norm + 1e-6)) < 1.0:  # the coefficient torch clamps to at most 1
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


def evaluate_loss(
    model, reader: SplitReader, ids: np.ndarray, pad_id: int, batch_size: int, device=None
) -> float:
    """Mean token loss over rows `ids` of `reader` (no grad; loss masks applied)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(ids), batch_size):
            data, mask = reader.rows(ids[i : i + batch_size])
            inputs, labels = batch_tensors(data, pad_id, mask, device)
            total += token_loss(model, inputs, labels, reduction="sum").item()
            count += int((labels != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


def eval_sample(n_rows: int, limit: int) -> np.ndarray:
    """At most `limit` row ids, evenly spaced over the split (validation cost bounded by the setting)."""
    if n_rows <= limit:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, limit).round().astype(np.int64))


class Dist:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        if self.world > 1 and not td.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            td.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    def sum(self, *values: float) -> float | list[float]:
        """Sum over ranks (one collective for all values)."""
        if self.world == 1:
            return values[0] if len(values) == 1 else list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        td.all_reduce(t)
        out = t.tolist()
        return out[0] if len(values) == 1 else out

    def barrier(self) -> None:
        if self.world > 1:
            td.barrier()

    def close(self) -> None:
        if self.world > 1 and td.is_initialized():
            td.destroy_process_group()


def _autocast(device):
    """bf16 autocast on GPU; fp32 (no autocast) on CPU."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class StopFlag:
    """Set by SIGTERM. Installed for the whole stage (setup, loop and finish), so a SIGTERM never kills
    the process outright: the loop checks it after each step (all ranks agree through the step's
    reduce), setup and finish at their phase boundaries (`Run.stop_requested`)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._installed = False

    def install(self) -> bool:
        """Handle SIGTERM from now on; False when it already was (or off the main thread)."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return False
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        self._installed = True
        return True

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._previous, self._installed = None, False


# ---------------------------------------------------------------------------------------------------------
# The stage: state, setup, loop, finish


@dataclass
class TrainState:
    """What a step checkpoint's `trainer_state.json` holds, besides the optimizer layout."""

    step: int = 0
    tokens_seen: int = 0
    # Tokens the init checkpoint had seen along its own stage chain (its `tokens_seen_total`): the stage's
    # versions report `tokens_before + tokens_seen` as their cumulative count.
    tokens_before: int = 0
    initial_val_loss: float = float("nan")
    curve: list[dict[str, float]] = field(default_factory=list)
    data: dict[str, int] = field(default_factory=dict)  # DataOrder.position()
    tokens_per_second: float = 0.0
    identity: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    # Throughput of the session so far: MFU, peak memory, share of step time waiting for data.
    perf: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrainState:
        return cls(**{f.name: obj[f.name] for f in dataclasses.fields(cls) if f.name in obj})


@dataclass
class Run:
    """One stage's training, as `setup` builds it."""

    job: TrainJob
    cfg: TrainConfig
    dist: Dist
    reporter: Reporter
    train_rows: SplitReader
    eval_rows: SplitReader
    eval_ids: np.ndarray
    pad_id: int
    seq_len: int
    steps: int
    global_rows: int
    model: Any
    ddp_model: Any
    optimizer: Any
    plan: TrainablePlan
    data: DataOrder
    run_dir: Path
    resume: Path | None
    export_dtype: str
    n_params: int
    saved_step: int = -1
    saved_path: Path | None = None
    stop: StopFlag = field(default_factory=StopFlag)
    flops_per_token: float = 0.0
    unsharded: set = field(default_factory=set)  # parameters FSDP left whole (gradients reduced here)
    loader: Prefetcher | None = None

    @property
    def device(self):
        return self.dist.device

    def stop_requested(self) -> bool:
        """Whether any rank got SIGTERM (one reduce: every rank agrees and stops at the same point)."""
        self.stop.requested = self.dist.sum(float(self.stop.requested)) > 0
        return self.stop.requested


@dataclass
class LoopResult:
    ran: int
    session_tokens: int
    elapsed: float
    preempted: bool


def setup(
    job: TrainJob, reporter: Reporter | None = None, stop: StopFlag | None = None
) -> tuple[Run, TrainState]:
    """Data readers, the model (resumed or from the stage's init), the optimizer and the state.
    Raises `Preempted` (nothing new written) when SIGTERM arrived meanwhile."""
    cfg = job.train
    dist = Dist()
    reporter = reporter or Reporter(dist.rank)
    device = dist.device
    torch.manual_seed(cfg.seed)
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8) // dist.world))

    # Under an object-store root: inputs and step checkpoints from the store (a pod on an empty disk resumes).
    pretrained = job.init.path if isinstance(job.init, PretrainedInit) else None
    store_cache.fill_paths(job.dataset_dir, job.tokenizer_dir, pretrained, job.run_dir)
    # Data: rows read on demand; steps derived from the budget; validation on a bounded sample.
    index = read_json(Path(job.dataset_dir) / "index.json")
    train_rows, val_rows = SplitReader(job.dataset_dir, "train"), SplitReader(job.dataset_dir, "val")
    if len(train_rows) == 0:
        raise ValueError(f"dataset {job.dataset_dir} has no training rows")
    pad_id, seq_len = index["pad_id"], index["seq_len"]
    steps, global_rows, total_rows = planned_steps(cfg, len(train_rows), seq_len, dist.world)
    eval_rows = val_rows if len(val_rows) else train_rows
    eval_ids = (
        eval_sample(len(val_rows), cfg.val_rows)
        if len(val_rows)
        else np.arange(min(len(train_rows), cfg.micro_batch_size * 4))
    )

    # Resume: the newest step checkpoint of this run identity (rank 0 moves other runs aside).
    run_dir = Path(job.run_dir)
    identity = ckpt.run_identity(job, dist.world)
    resume, messages = ckpt.prepare_run(run_dir, identity, cfg.keep_aside) if dist.rank == 0 else (None, [])
    dist.barrier()
    if dist.rank != 0:
        steps_found = ckpt.step_dirs(run_dir)
        resume = steps_found[-1][1] if steps_found else None
    if dist.rank == 0:  # an earlier attempt's preemption record (the launcher reads a fresh one)
        (run_dir / PREEMPTED_FILE).unlink(missing_ok=True)
    for message in messages:
        reporter.log(f"[{job.stage}] {message}")

    # Model: the resumed checkpoint, else the stage's init (EEVE extension included).
    # A stage export cast to the model's dtype hands the next stage its float32 weights.
    init = PretrainedInit(path=str(resume)) if resume else ckpt.full_precision_init(job.init)
    model = build_model(
        init,
        index["vocab_size"],
        index["bos_id"],
        index["eos_id"],
        index.get("model_pad_id"),
        cfg.seed,
        job.tokenizer_dir,
        job.model.eeve_tied_rule,
    ).to(device)
    eeve = read_eeve(job.tokenizer_dir)
    plan = apply_policy(model, cfg.trainable, eeve.base_vocab_size if eeve else None)
    # Throughput layout (training/parallel.py): checkpointing, compile, then FSDP2 sharding, which
    # replaces the parameters (the policy is applied again to the sharded ones).
    parallel.apply_activation_checkpointing(model, cfg.activation_checkpointing)
    if parallel.use_compile(cfg, device):
        parallel.apply_compile(model)
    unsharded: set = set()
    if cfg.parallelism == "fsdp" and dist.world > 1:
        unsharded = parallel.shard(model, plan, device)
        plan = apply_policy(model, cfg.trainable, eeve.base_vocab_size if eeve else None)
    # Fused AdamW (one kernel for all tensors, on CPU and GPU); frozen rows have no moments at all.
    optimizer = torch.optim.AdamW(
        plan.param_groups(cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), fused=True
    )

    state = TrainState(
        identity=identity, fingerprint=ckpt.fingerprint(identity), tokens_before=tokens_before(job.init)
    )
    if resume:
        state = TrainState.from_json(ckpt.load_into(resume, optimizer))
        parallel.shard_optimizer_state(optimizer)
    data = DataOrder(len(train_rows), global_rows, cfg.seed, total_rows, **state.data)
    ddp_model = model
    if dist.world > 1 and not parallel.is_sharded(model):
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    run = Run(
        job=job,
        cfg=cfg,
        dist=dist,
        reporter=reporter,
        train_rows=train_rows,
        eval_rows=eval_rows,
        eval_ids=eval_ids,
        pad_id=pad_id,
        seq_len=seq_len,
        steps=steps,
        global_rows=global_rows,
        model=model,
        ddp_model=ddp_model,
        optimizer=optimizer,
        plan=plan,
        data=data,
        run_dir=run_dir,
        resume=resume,
        export_dtype=export_dtype(job),
        n_params=sum(p.numel() for p in model.parameters()),
        saved_step=state.step if resume else -1,
        saved_path=resume,
        stop=stop or StopFlag(),
        flops_per_token=flops.flops_per_token(model.config, seq_len),
        unsharded=unsharded,
    )
    # The init is loaded (its dtype read): under an object-store root the cache may evict its local copy.
    store_cache.release_paths(pretrained)
    _preempt_if_requested(run, state)  # SIGTERM while the model loaded: nothing new to save
    if not resume:
        state.initial_val_loss = evaluate_loss(
            model, eval_rows, eval_ids, pad_id, cfg.micro_batch_size, device
        )
        _preempt_if_requested(run, state)
    if dist.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        reporter.log_file = run_dir / ckpt.LOG_FILE
        if not resume:
            reporter.log_file.unlink(missing_ok=True)
            store_cache.after_delete(reporter.log_file)  # an earlier run's log, in the store
    reporter.log(
        f"[{job.stage}] {run.n_params:,} params ({plan.trainable_parameters:,} trainable, policy "
        f"{cfg.trainable}), {len(train_rows)} train rows, {steps} steps of {global_rows * seq_len} tokens on "
        f"{dist.world} x {device.type} ({parallel.describe(run.model, cfg, device)}), initial val loss "
        f"{state.initial_val_loss:.4f}" + (f"; resumed from {resume.name}" if resume else "")
    )
    return run, state


def publish_log(run: Run) -> None:
    """Under an object-store root, publish the run's log (appended in place, so not an atomic write) to the
    store; else nothing."""
    log = run.reporter.log_file
    if run.dist.rank == 0 and log is not None and Path(log).is_file():
        store_cache.after_commit(log)


def _preempt_if_requested(run: Run, state: TrainState) -> None:
    """At a phase boundary of setup or finish: after SIGTERM on any rank, stop with `Preempted` (the
    newest step checkpoint, if any, is where the retried run resumes)."""
    if run.stop_requested():
        run.reporter.log(f"[{run.job.stage}] SIGTERM outside the steps: stopping at step {state.step}")
        run.train_rows.close()
        run.eval_rows.close()
        run.dist.close()
        publish_log(run)
        raise Preempted(state.step, run.saved_path)


def train_step(run: Run, state: TrainState) -> dict[str, float]:
    """One optimizer step; returns its record for the loss curve."""
    t0 = time.perf_counter()
    cfg, dist = run.cfg, run.dist
    lr = lr_at(state.step, run.steps, cfg)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    rows = run.data.next_step()
    wait_before = run.loader.wait_seconds if run.loader else 0.0
    if run.loader is not None:
        batches = run.loader.get(rows)
    else:
        batches = micro_batches(
            run.train_rows, rows, dist.rank, dist.world, cfg.grad_accum, cfg.micro_batch_size, run.pad_id
        )
    data_wait = (run.loader.wait_seconds - wait_before) if run.loader else time.perf_counter() - t0
    loss_sum, tokens = step_gradients(run.ddp_model, batches, dist, run.device)
    parallel.reduce_unsharded_grads(run.unsharded, dist.world)
    run.plan.gather_row_grads()
    params = run.plan.parameters()
    if cfg.grad_clip is not None:
        grad_norm = clip_gradients(params, cfg.grad_clip, parallel.is_sharded(run.model))
    else:
        grad_norm = float(parallel.grad_norm(params))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.plan.zero_row_grads()
    # One reduce for the step's loss and for SIGTERM: any rank told to stop stops every rank here.
    loss_total, stop = dist.sum(float(loss_sum), float(run.stop.requested))
    run.stop.requested = stop > 0
    state.step += 1
    state.tokens_seen += tokens
    return {
        "step": state.step,
        "loss": loss_total / max(tokens, 1),
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens": tokens,
        "seconds": time.perf_counter() - t0,
        "data_wait": data_wait,
    }


def run_loop(run: Run, state: TrainState, stop_after: int | None = None) -> LoopResult:
    """Steps until the plan's end (or `stop_after` steps of this process, or SIGTERM)."""
    cfg = run.cfg
    run.model.train()
    installed = run.stop.install()  # `train` installs it for the whole stage; a direct caller here
    session_tokens, session_start, ran, waited = 0, time.perf_counter(), 0, 0.0
    left = run.steps - state.step if stop_after is None else min(stop_after, run.steps - state.step)
    run.loader = _loader(run, left)
    try:
        while state.step < run.steps and (stop_after is None or ran < stop_after):
            record = train_step(run, state)
            record["elapsed"] = time.perf_counter() - session_start
            state.curve.append(record)
            session_tokens += record["tokens"]
            waited += record["data_wait"]
            ran += 1
            tps = session_tokens / record["elapsed"]
            state.perf = _perf(run, tps, waited / record["elapsed"])
            if state.step % cfg.log_every == 0 or state.step == run.steps:
                mfu = state.perf.get("mfu")
                run.reporter.log(
                    f"[{run.job.stage}] step {state.step}/{run.steps} loss {record['loss']:.4f} lr "
                    f"{record['lr']:.2e} grad_norm {record['grad_norm']:.3f} {tps:,.0f} tok/s"
                    + (f" MFU {mfu:.1%}" if mfu else "")
                    + f" data wait {state.perf['data_wait_share']:.1%}"
                    + _memory_text(state.perf),
                    **record,
                    tokens_per_second=tps,
                    **state.perf,
                )
            if run.stop.requested:
                if run.saved_step != state.step:
                    save_step_checkpoint(run, state)
                run.reporter.log(f"[{run.job.stage}] SIGTERM: checkpoint at step {state.step}, exiting")
                return LoopResult(ran, session_tokens, time.perf_counter() - session_start, True)
            keep = _keep_step(cfg, state.step)
            periodic = cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
            if (periodic or keep) and state.step < run.steps:
                save_step_checkpoint(run, state, keep=keep)
    finally:
        if installed:
            run.stop.uninstall()
        if run.loader is not None:
            run.loader.close()
            run.loader = None
    return LoopResult(ran, session_tokens, time.perf_counter() - session_start, False)


def _loader(run: Run, steps: int) -> Prefetcher | None:
    """Batches of the next `steps` steps loaded ahead by a thread with its own reader (None: inline)."""
    cfg, dist = run.cfg, run.dist
    if cfg.data_prefetch == 0 or steps <= 0:
        return None
    reader = SplitReader(run.job.dataset_dir, "train")

    def load(rows):
        return micro_batches(
            reader, rows, dist.rank, dist.world, cfg.grad_accum, cfg.micro_batch_size, run.pad_id
        )

    pin = cfg.pin_memory and run.device.type == "cuda"
    return Prefetcher(run.data, load, cfg.data_prefetch, pin=pin, limit=steps, on_close=reader.close)


def _perf(run: Run, tokens_per_second: float, wait_share: float) -> dict[str, Any]:
    """MFU (attention-inclusive FLOPs, GPU only), peak memory and the share of time spent waiting for
    data, of this session so far."""
    out: dict[str, Any] = {
        "flops_per_token": run.flops_per_token,
        "mfu": flops.mfu(run.flops_per_token, tokens_per_second, run.device, run.dist.world),
        "data_wait_share": wait_share,
    }
    return out | flops.peak_memory(run.device)


def _memory_text(perf: dict[str, Any]) -> str:
    if "peak_gpu_memory_bytes" in perf:
        return f" peak GPU memory {perf['peak_gpu_memory_bytes'] / 2**30:.2f} GiB"
    return f" peak RSS {perf['peak_rss_bytes'] / 2**30:.2f} GiB"


def _keep_step(cfg: TrainConfig, step: int) -> bool:
    return bool((cfg.keep_every and step % cfg.keep_every == 0) or step in cfg.keep_steps)


def save_step_checkpoint(run: Run, state: TrainState, keep: bool = False) -> Path:
    """Write `<run_dir>/step_NNNNNNNN` (rank 0), prune old ones, mark it kept when asked."""
    path = run.run_dir / f"step_{state.step:08d}"
    sharded = parallel.is_sharded(run.model)
    if sharded:  # collectives: every rank generates (in step) and gathers the sharded tensors
        samples = _samples(run.model, run.job, run.device)
        model_state = parallel.full_model_state(run.model)
        optimizer_state = parallel.full_optimizer_state(run.optimizer)
    if run.dist.rank == 0:
        if not sharded:
            samples = _samples(run.model, run.job, run.device)
            model_state = optimizer_state = None
        state.data = run.data.position()
        # Under an object-store root the step checkpoints written so far are in the store: the local cache
        # may evict them (a resumed run fetches them back) to make room for this one, about as large as the
        # last (the first: float32 weights and two Adam moments per parameter).
        room = (
            ckpt.disk_usage(run.saved_path)
            if run.saved_path and run.saved_path.is_dir()
            else 12 * run.n_params
        )
        store_cache.release_paths(*(p for _, p in ckpt.step_dirs(run.run_dir)), room=room)
        with parallel.plain_class(run.model):
            ckpt.save(
                path,
                run.model,
                run.optimizer,
                state.to_json(),
                run.job.tokenizer_dir,
                {"samples.json": samples},
                model_state=model_state,
                optimizer_state=optimizer_state,
            )
        if keep:
            ckpt.mark_kept(run.run_dir, state.step, "keep_every/keep_steps")
        ckpt.prune(run.run_dir, run.cfg.keep_last)
        run.reporter.log(f"[{run.job.stage}] checkpoint {path.name}" + (" (kept)" if keep else ""))
    run.dist.barrier()
    run.saved_step, run.saved_path = state.step, path
    return path


def finish(run: Run, state: TrainState, loop: LoopResult) -> dict[str, Any]:
    """The final step checkpoint, the export to `output_dir` and the stage's metrics."""
    job, cfg, dist = run.job, run.cfg, run.dist
    metrics = {
        "stage": job.stage,
        "steps": run.steps,
        "steps_run": loop.ran,
        "resumed_from": run.resume.name if run.resume else None,
        "tokens_seen": state.tokens_seen,
        "tokens_seen_total": state.tokens_before + state.tokens_seen,
        "tokens_per_step": run.global_rows * run.seq_len,
        "initial_val_loss": state.initial_val_loss,
        "final_train_loss": state.curve[-1]["loss"] if state.curve else float("nan"),
        "tokens_per_second": loop.session_tokens / loop.elapsed if loop.ran else state.tokens_per_second,
        "train_seconds": loop.elapsed,
        "parameters": run.n_params,
        "trainable_parameters": run.plan.trainable_parameters,
        "trainable": cfg.trainable,
        "processes": dist.world,
        "layout": parallel.describe(run.model, cfg, run.device),
        "device": run.device.type if dist.world == 1 else f"{dist.world} x {run.device.type}",
        "host": platform.node(),
        "curve": state.curve,
        "trained_from": ckpt.trained_from(state.identity),
    }
    if loop.preempted:
        dist.close()
        publish_log(run)
        raise Preempted(state.step, run.saved_path)
    if state.step < run.steps:  # stopped by `stop_after`: no final checkpoint
        dist.close()
        return metrics
    state.tokens_per_second = metrics["tokens_per_second"]
    final = (
        run.saved_path
        if run.saved_step == run.steps
        else save_step_checkpoint(run, state, _keep_step(cfg, state.step))
    )
    # SIGTERM during finish: the final step checkpoint is written, so the retried run resumes there and
    # only evaluates and exports (a SIGTERM once the export is written changes nothing: the stage is done).
    _preempt_if_requested(run, state)
    metrics["final_val_loss"] = evaluate_loss(
        run.model, run.eval_rows, run.eval_ids, run.pad_id, cfg.micro_batch_size, run.device
    )
    _preempt_if_requested(run, state)
    metrics["mfu"] = flops.mfu(run.flops_per_token, metrics["tokens_per_second"], run.device, dist.world)
    metrics["flops_per_token"] = run.flops_per_token
    metrics["data_wait_share"] = state.perf.get("data_wait_share")
    metrics |= flops.peak_memory(run.device)
    metrics["export_dtype"] = run.export_dtype
    if dist.rank == 0:
        metrics["kept_steps"] = ckpt.kept_steps(run.run_dir)
        metrics["runs_aside"] = (
            sum(1 for p in (run.run_dir / ckpt.ASIDE_DIR).iterdir())
            if (run.run_dir / ckpt.ASIDE_DIR).is_dir()
            else 0
        )
        export(final, job, metrics, run.export_dtype)
        ckpt.mark_finished(run.run_dir)
        metrics["disk_bytes"] = ckpt.disk_usage(run.run_dir, job.output_dir)
        run.reporter.log(
            f"[{job.stage}] val loss {metrics['initial_val_loss']:.4f} -> {metrics['final_val_loss']:.4f}; "
            f"saved {job.output_dir} ({run.export_dtype}); checkpoints on disk {metrics['disk_bytes'] / 1e6:,.1f} MB"
        )
        publish_log(run)
    dist.barrier()
    dist.close()
    return metrics


def train(
    job: TrainJob | dict[str, Any], reporter: Reporter | None = None, stop_after: int | None = None
) -> dict[str, Any]:
    """Run (or resume) one stage; returns its metrics. `stop_after` ends early after that many steps of
    this process (for benchmarks; no final checkpoint is written then). Raises `Preempted` after SIGTERM."""
    job = job if isinstance(job, TrainJob) else TrainJob.model_validate(job)
    stop = StopFlag()
    installed = stop.install()  # from the first moment: a SIGTERM in setup or finish is a preemption too
    try:
        run, state = setup(job, reporter, stop)
        try:
            loop = run_loop(run, state, stop_after)
            return finish(run, state, loop)
        finally:
            run.train_rows.close()
            run.eval_rows.close()
    finally:
        if installed:
            stop.uninstall()


# ---------------------------------------------------------------------------------------------------------
# Outputs


def tokens_before(init: ModelInit) -> int:
    """Training tokens the init checkpoint has seen along its stage chain: its `metrics.json`'s
    `tokens_seen_total` (or `tokens_seen`) when it is a stage export of this platform, else 0 (a base
    model's own pretraining is not counted)."""
    if not isinstance(init, PretrainedInit):
        return 0
    f = Path(init.path) / "metrics.json"
    if not f.is_file():
        return 0
    m = read_json(f)
    return int(m.get("tokens_seen_total", m.get("tokens_seen", 0)) or 0)


def export_dtype(job: TrainJob) -> str:
    """The dtype the stage's model is published in: the init checkpoint's own (bf16 for SmolLM2 and
    Llama-3.2), else float32 (models from the recipe's config)."""
    if not isinstance(job.init, PretrainedInit):
        return "float32"
    config_file = Path(job.init.path) / "config.json"
    if config_file.exists():
        config = read_json(config_file)
    else:
        try:
            config = AutoConfig.from_pretrained(job.init.path).to_dict()
        except Exception:  # noqa: BLE001 - an unreadable hub config: keep the training dtype
            return "float32"
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(dtype).removeprefix("torch.")


def export(step_dir: Path, job: TrainJob, metrics: dict[str, Any], dtype: str = "float32") -> None:
    """The stage's checkpoint: the last step checkpoint (hard links; weights cast to the model's dtype) plus
    metrics, job and loss curve, atomically and durably."""
    extra: dict[str, Any] = {"metrics.json": metrics, "job.json": job.model_dump(mode="json")}
    png = loss_curve_png(metrics["curve"], f"{job.stage}: training loss")
    if png:
        extra["loss_curve.png"] = png
    ckpt.export(step_dir, job.output_dir, dtype, extra)


def _samples(model, job: TrainJob, device) -> list[dict[str, str]]:
    if not job.generation.prompts:
        return []
    tok = AutoTokenizer.from_pretrained(job.tokenizer_dir)
    return generate_samples(model, tok, job.generation, device)


def _location(path: str) -> dict[str, str]:
    """A path as Pipes metadata: the object's URL under an object-store root, else the local path."""
    url = store_cache.object_url(path)
    return {"raw_value": url, "type": "url"} if url else {"raw_value": path, "type": "path"}


def materialization_metadata(job: TrainJob | dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """What `checkpoint/<stage>` shows in Dagster (Pipes metadata: raw values with their types)."""
    job = job if isinstance(job, TrainJob) else TrainJob.model_validate(job)
    out = Path(job.output_dir)
    samples = read_json(out / "samples.json") if (out / "samples.json").exists() else []
    meta = {
        "path": _location(job.output_dir),
        "steps": {"raw_value": metrics["steps"], "type": "int"},
        "tokens_seen": {"raw_value": metrics["tokens_seen"], "type": "int"},
        "tokens_seen_total": {"raw_value": metrics.get("tokens_seen_total", 0), "type": "int"},
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
    if "disk_bytes" in metrics:
        meta["checkpoint_disk_bytes"] = {"raw_value": metrics["disk_bytes"], "type": "int"}
        meta["kept_steps"] = {"raw_value": metrics.get("kept_steps", []), "type": "json"}
        meta["runs_aside"] = {"raw_value": metrics.get("runs_aside", 0), "type": "int"}
        meta["export_dtype"] = {"raw_value": metrics.get("export_dtype", "float32"), "type": "text"}
    if metrics.get("trained_from"):
        meta["trained_from"] = {"raw_value": metrics["trained_from"], "type": "json"}
    if metrics.get("resumed_from"):
        meta["resumed_from"] = {"raw_value": metrics["resumed_from"], "type": "text"}
    if metrics.get("mfu") is not None:
        meta["mfu"] = {"raw_value": metrics["mfu"], "type": "float"}
    for key in ("peak_gpu_memory_bytes", "peak_rss_bytes"):
        if metrics.get(key) is not None:
            meta[key] = {"raw_value": metrics[key], "type": "int"}
    if metrics.get("data_wait_share") is not None:
        meta["data_wait_share"] = {"raw_value": metrics["data_wait_share"], "type": "float"}
    if (out / "loss_curve.png").exists():
        meta["loss_curve_plot"] = {
            "raw_value": png_markdown((out / "loss_curve.png").read_bytes(), "loss curve"),
            "type": "md",
        }
    return meta


# Files of an export that record how the run went (times, throughput, paths), not what it produced.
RUN_RECORD_FILES = ("metrics.json", "loss_curve.png", "job.json", "log.jsonl")


def export_data_version(job: TrainJob) -> str:
    """The data version of the stage's export: a hash of the model, tokenizer and samples it holds, so a
    retrained stage that ended with the same weights reports the same version (and automation downstream
    sees no change)."""
    return content_version(job.output_dir, exclude=RUN_RECORD_FILES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job", required=True, help="JSON file describing the training job (a TrainJob)")
    args = parser.parse_args(argv)
    job = TrainJob.read(args.job)
    reporter = Reporter(int(os.environ.get("RANK", "0")))
    try:
        metrics = train(job, reporter)
        if reporter.rank == 0:
            reporter.materialize(materialization_metadata(job, metrics), export_data_version(job))
    except Preempted as exc:
        reporter.log(str(exc))
        if reporter.rank == 0:  # what the launcher reads when torchrun hides the exit status
            write_preempted(job.run_dir, exc.step, exc.path)
        reporter.close(exc)
        return PREEMPTED_EXIT_CODE
    except BaseException as exc:
        reporter.close(exc)
        raise
    reporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
