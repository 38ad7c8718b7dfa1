"""Training throughput on one GPU: our trainer against Hugging Face `Trainer`, same model shape and data.

    python -m benchmarks.train_gpu [--shape smollm2-360m|llama-3.2-1b|all] [--steps N]
    python -m benchmarks.train_gpu --dry-run        # CPU, tiny shape: both sides build and step (CI)

Equivalent work: the same model shape (SmolLM2-360M: 960 hidden, 32 layers, 15 heads, 5 KV heads, 49,152
vocabulary, tied embeddings; Llama-3.2-1B: 2,048 hidden, 16 layers, 32 heads, 8 KV heads, 128,256
vocabulary, tied), one set of random initial weights saved once and loaded by both, the same packed rows
of random tokens in the same order (HF `Trainer` gets our data order through a sequential sampler), the
same micro-batch and sequence length (2,048), AdamW (fused, betas 0.9/0.95, weight decay 0.1), constant
lr, clipping at 1.0, loss read every step. Precision: fp32 master weights, bf16 autocast on both sides.
Each side uses its own best single-GPU options, named on the RESULT line: ours `compile` (each decoder
layer compiled), batches prefetched into pinned memory; HF `torch_compile=True`, `bf16=True`, SDPA
attention, pinned dataloader memory. Each side runs in its own process; the median step after the warm-up
steps (compilation included there) gives tokens/s, and MFU is achieved FLOP/s (attention-inclusive
formula, `lm_platform.training.flops`) over the GPU's dense bf16 peak. Losses: the largest per-step
difference (compiled kernels on both sides: close, not identical).

On a GPU this is the one prepared script of the device check (`scripts/gpu_smoke.sh` runs the trainer's
resume checks): with the default 5 warm-up and 15 timed steps both shapes fit in about six minutes on an
H100, compilation included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SHAPES = {
    "smollm2-360m": {
        "model": {
            "hidden_size": 960,
            "intermediate_size": 2560,
            "num_layers": 32,
            "num_heads": 15,
            "num_kv_heads": 5,
            "max_position_embeddings": 2048,
            "rope_theta": 100000.0,
            "tie_word_embeddings": True,
        },
        "vocab": 49152,
        "micro": 8,
    },
    "llama-3.2-1b": {
        "model": {
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_layers": 16,
            "num_heads": 32,
            "num_kv_heads": 8,
            "head_dim": 64,
            "max_position_embeddings": 2048,
            "rope_theta": 500000.0,
            "tie_word_embeddings": True,
        },
        "vocab": 128256,
        "micro": 4,
    },
    # --dry-run: the same code paths on CPU in seconds.
    "tiny": {
        "model": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 2,
            "max_position_embeddings": 64,
            "rope_theta": 10000.0,
            "tie_word_embeddings": True,
        },
        "vocab": 256,
        "micro": 2,
    },
}
LR, SEED = 3e-4, 0


def make_inputs(work: Path, shape: str, seq: int, rows: int) -> tuple[Path, Path]:
    """A packed dataset of random tokens and the initial model (fp32), both sides' input."""
    from lm_platform.atomic import write_json
    from lm_platform.modeling.init import build_model

    spec = SHAPES[shape]
    data = work / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    dtype = np.uint32 if spec["vocab"] > 65535 else np.uint16
    arrays = {
        "train": rng.integers(4, spec["vocab"], size=(rows, seq + 1)).astype(dtype),
        "val": rng.integers(4, spec["vocab"], size=(2, seq + 1)).astype(dtype),
    }
    splits = {}
    for name, a in arrays.items():
        np.save(data / f"{name}_00000.npy", a)
        splits[name] = {
            "docs": len(a),
            "tokens": a.size,
            "rows": len(a),
            "padding": 0,
            "shards": [{"file": f"{name}_00000.npy", "rows": len(a)}],
        }
    index = {
        "seq_len": seq,
        "row_len": seq + 1,
        "dtype": np.dtype(dtype).name,
        "vocab_size": spec["vocab"],
        "bos_id": 1,
        "eos_id": 2,
        "pad_id": 3,
        "model_pad_id": 3,
        "val_fraction": 0.0,
        "tokens": sum(a.size for a in arrays.values()),
        "splits": splits,
        "sources": {},
    }
    write_json(data / "index.json", index)
    model = work / "init"
    build_model({"kind": "scratch", "model": spec["model"]}, spec["vocab"], 1, 2, 3, SEED).save_pretrained(
        str(model)
    )
    return data, model


def _rates(step_ends: list[float], warmup: int, tokens_per_step: int) -> dict[str, float]:
    ends = step_ends[warmup - 1 :]
    median = statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False))
    return {"tokens_per_second": tokens_per_step / median, "median_step_seconds": median}


def run_ours(work: Path, shape: str, seq: int, warmup: int, steps: int, gpu: bool) -> dict:
    from lm_platform.training.config import TrainConfig, TrainJob
    from lm_platform.training.train import Reporter, train

    micro = SHAPES[shape]["micro"]
    cfg = TrainConfig(
        micro_batch_size=micro,
        lr=LR,
        schedule="constant",
        warmup_steps=0,
        weight_decay=0.1,
        grad_clip=1.0,
        log_every=1,
        seed=SEED,
        val_rows=1,
        token_budget=(warmup + steps) * micro * seq,
        compile=gpu,
    )
    out = work / "ours"
    job = TrainJob(
        recipe="bench",
        stage="bench",
        dataset_dir=str(work / "data"),
        tokenizer_dir=str(work),
        output_dir=str(out),
        run_dir=str(out) + ".run",
        init={"kind": "pretrained", "path": str(work / "init")},
        train=cfg,
    )
    reporter = Reporter()
    reporter.log = lambda *a, **k: None
    curve = train(job, reporter, stop_after=warmup + steps)["curve"]
    res = _rates([c["elapsed"] for c in curve], warmup, micro * seq)
    res["options"] = "compile+prefetch+pinned" if gpu else "eager"
    return res | {"losses": [c["loss"] for c in curve]}


def run_hf(work: Path, shape: str, seq: int, warmup: int, steps: int, gpu: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, TrainingArguments

    from benchmarks._hf_peer import Clock, InOrder, OrderedRows, collate
    from lm_platform.data.blending.pack import SplitReader
    from lm_platform.training.train import DataOrder

    micro = SHAPES[shape]["micro"]
    reader = SplitReader(work / "data", "train")
    order = DataOrder(len(reader), micro, SEED)
    ordered = np.concatenate([np.sort(order.next_step()) for _ in range(warmup + steps)])

    clock = Clock()
    args = TrainingArguments(
        output_dir=str(work / "hf"),
        per_device_train_batch_size=micro,
        max_steps=warmup + steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.1,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not gpu,
        bf16=gpu,
        torch_compile=gpu,
        dataloader_pin_memory=gpu,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=SEED,
        disable_tqdm=True,
        logging_nan_inf_filter=False,
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(work / "init"), dtype=torch.float32, attn_implementation="sdpa"
    )
    InOrder(
        model=model,
        args=args,
        train_dataset=OrderedRows(ordered, lambda j: reader.rows([j])[0][0]),
        data_collator=collate,
        callbacks=[clock],
    ).train()
    res = _rates(clock.ends, warmup, micro * seq)
    res["options"] = "torch_compile+bf16+sdpa+pinned" if gpu else "eager"
    return res | {"losses": clock.losses}


def worker(engine: str, work: Path, shape: str, seq: int, warmup: int, steps: int) -> None:
    import torch

    gpu = torch.cuda.is_available()
    fn = run_ours if engine == "ours" else run_hf
    res = fn(work, shape, seq, warmup, steps, gpu)
    if gpu:
        res["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        res["device"] = torch.cuda.get_device_name()
    print("WORKER " + json.dumps(res), flush=True)


def _side(engine: str, work: Path, shape: str, seq: int, warmup: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "benchmarks.train_gpu", "--worker", engine, "--work", str(work)]
    cmd += ["--shape", shape, "--seq", str(seq), "--warmup", str(warmup), "--steps", str(steps)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WORKER ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"{engine} on {shape} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(line[len("WORKER ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shape on CPU: both sides build and step")
    parser.add_argument("--shape", default="all", choices=[*SHAPES, "all"])
    parser.add_argument("--seq", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker:
        return worker(a.worker, Path(a.work), a.shape, a.seq, a.warmup, a.steps)
    import torch

    from lm_platform.modeling.init import llama_config
    from lm_platform.training.flops import flops_per_token, peak_flops

    gpu = torch.cuda.is_available()
    if not gpu and not a.dry_run:
        sys.exit("no GPU: run with --dry-run on CPU (tiny shape), or on a machine with a CUDA GPU")
    shapes = ["tiny"] if a.dry_run else (["smollm2-360m", "llama-3.2-1b"] if a.shape == "all" else [a.shape])
    seq = a.seq or (32 if a.dry_run else 2048)
    warmup = a.warmup or (2 if a.dry_run else 5)
    steps = a.steps or (3 if a.dry_run else 15)
    results = []
    for shape in shapes:
        spec = SHAPES[shape]
        fpt = flops_per_token(llama_config(spec["model"], spec["vocab"], 1, 2, 3), seq)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            make_inputs(work, shape, seq, rows=(warmup + steps + 1) * spec["micro"])
            sides = {e: _side(e, work, shape, seq, warmup, steps) for e in ("ours", "hf")}
        peak = peak_flops(0) if gpu else None
        n = min(len(sides["ours"]["losses"]), len(sides["hf"]["losses"]))
        diff = max(
            abs(x - y) for x, y in zip(sides["ours"]["losses"][:n], sides["hf"]["losses"][:n], strict=True)
        )
        row = {"shape": shape, "diff": diff, "steps_compared": n}
        for e, r in sides.items():
            row[e] = r["tokens_per_second"]
            row[f"{e}_mfu"] = fpt * r["tokens_per_second"] / peak if peak else float("nan")
            row[f"{e}_options"] = r["options"]
            row[f"{e}_mem"] = r.get("peak_gpu_memory_gb", float("nan"))
        results.append(row)
        print(
            f"{shape}: seq {seq}, micro-batch {spec['micro']}, {fpt / 1e9:.2f} GFLOP/token; "
            f"ours {row['ours']:,.0f} tok/s (MFU {row['ours_mfu']:.3f}, {row['ours_mem']:.1f} GiB, "
            f"{row['ours_options']}), HF Trainer {row['hf']:,.0f} tok/s (MFU {row['hf_mfu']:.3f}, "
            f"{row['hf_mem']:.1f} GiB, {row['hf_options']}); loss max |diff| {diff:.2e} over {n} steps",
            flush=True,
        )
    head = results[0]  # the RESULT line: the first shape (SmolLM2-360M on a GPU)
    extra = " ".join(
        f"{r['shape']}_ratio={r['ours'] / r['hf']:.3f} {r['shape']}_mfu={r['ours_mfu']:.3f}"
        for r in results[1:]
    )
    device = torch.cuda.get_device_name().replace(" ", "_") if gpu else "cpu"
    print(
        f"RESULT name=train_gpu ours={head['ours']:.0f} peer={head['hf']:.0f} ratio={head['ours'] / head['hf']:.3f} "
        f"unit=tokens/s higher_is_better=true shape={head['shape']} mfu={head['ours_mfu']:.3f} "
        f"peer_mfu={head['hf_mfu']:.3f} loss_max_abs_diff={head['diff']:.2e} ours_options={head['ours_options']} "
        f"peer_options={head['hf_options']} device={device} dry_run={str(a.dry_run).lower()}"
        + (f" {extra}" if extra else "")
    )


if __name__ == "__main__":
    main()
