"""Training throughput: our trainer against Hugging Face `Trainer`, same work.

    python -m benchmarks.train [--quick]

Equivalent work: the same tiny Llama (one set of initial weights saved once and loaded by both), the
same packed rows in the same order (HF `Trainer` gets our data order through a sequential sampler), the
same micro-batch, sequence length, fp32 on CPU, AdamW (betas 0.9/0.95, weight decay 0.1 on matrices),
constant lr, gradient clipping at 1.0, loss logged every step. Each engine runs in its own process (so
peak RSS is its own) for several rounds, the two engines' rounds interleaved; a round times `--steps`
optimizer steps after `--warmup` steps, each from the end of the previous step to its own end, and
takes the median step (the whole-round rate is printed too, and `fast_step_ratio`: the same from the
fastest tenth of each engine's steps, what a step costs when the shared machine leaves it alone). Both engines log every step as a user's
run would (ours: its log line and `log.jsonl`; HF: its printed log dict), and read the loss every step.

Agreement: the largest difference between the two engines' per-step training losses, absolute and
relative. Same weights, same batches, same math, but not the same order of sums: our trainer computes the
output head and cross-entropy in chunks (`training/loss.py`: no [B, T, V] logits tensor), HF on the full
logits, so losses agree to fp32 rounding, and the small weight differences this leaves grow a little over
the steps. The run fails (exit 1, `agreement=false`) if the relative difference exceeds LOSS_RTOL.

`--compile`: both engines with torch.compile (ours: the stage option `compile`, each decoder layer; HF:
`torch_compile=True`, the whole model), the same options on both sides; compiled kernels may round
differently, so the losses agree closely rather than exactly. Compilation happens in the warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# The demo recipe's tiny Llama shape, sequence length and micro-batch (with a 2,048-token vocabulary).
MODEL = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
VOCAB, SEQ, MICRO, LR, SEED = 2048, 128, 8, 1e-3, 0
LOSS_RTOL = 1e-5  # largest relative difference of a step's loss between the engines (fp32 rounding)


def make_inputs(work: Path, rows: int) -> tuple[Path, Path]:
    """A packed dataset of random tokens and the initial model, both engines' input."""
    from lm_platform.atomic import write_json
    from lm_platform.modeling.init import build_model

    data = work / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    train = rng.integers(4, VOCAB, size=(rows, SEQ + 1)).astype(np.uint16)
    val = rng.integers(4, VOCAB, size=(MICRO, SEQ + 1)).astype(np.uint16)
    np.save(data / "train_00000.npy", train)
    np.save(data / "val_00000.npy", val)
    splits = {
        name: {
            "docs": len(a),
            "tokens": a.size,
            "rows": len(a),
            "padding": 0,
            "shards": [{"file": f"{name}_00000.npy", "rows": len(a)}],
        }
        for name, a in (("train", train), ("val", val))
    }
    write_json(
        data / "index.json",
        {
            "seq_len": SEQ,
            "row_len": SEQ + 1,
            "dtype": "uint16",
            "vocab_size": VOCAB,
            "bos_id": 1,
            "eos_id": 2,
            "pad_id": 3,
            "model_pad_id": 3,
            "val_fraction": 0.0,
            "tokens": train.size + val.size,
            "splits": splits,
            "sources": {},
        },
    )
    model = work / "init"
    build_model({"kind": "scratch", "model": MODEL}, VOCAB, 1, 2, 3, SEED).save_pretrained(str(model))
    return data, model


COMPILE = os.environ.get("BENCH_TRAIN_COMPILE") == "1"


def run_ours(work: Path, data: Path, model: Path, warmup: int, steps: int, r: int) -> dict:
    from lm_platform.training.config import TrainConfig, TrainJob
    from lm_platform.training.train import Reporter, train

    cfg = TrainConfig(
        micro_batch_size=MICRO,
        lr=LR,
        schedule="constant",
        warmup_steps=0,
        weight_decay=0.1,
        grad_clip=1.0,
        log_every=1,
        seed=SEED,
        token_budget=(warmup + steps) * MICRO * SEQ,
        compile=COMPILE,
    )
    out = work / f"ours_{r}"
    job = TrainJob(
        recipe="bench",
        stage="bench",
        dataset_dir=str(data),
        tokenizer_dir=str(work),
        output_dir=str(out),
        run_dir=str(out) + ".run",
        init={"kind": "pretrained", "path": str(model)},
        train=cfg,
    )
    curve = train(job, Reporter(), stop_after=warmup + steps)["curve"]  # logs every step, like HF
    return _rates([c["elapsed"] for c in curve], warmup) | {"losses": [c["loss"] for c in curve]}


def run_hf(work: Path, data: Path, model: Path, warmup: int, steps: int, r: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, TrainingArguments

    from benchmarks._hf_peer import Clock, InOrder, OrderedRows, collate
    from lm_platform.data.blending.pack import load_split
    from lm_platform.training.train import DataOrder

    rows = load_split(data, "train")
    order = DataOrder(len(rows), MICRO, SEED)
    ordered = np.concatenate([np.sort(order.next_step()) for _ in range(warmup + steps)])

    clock = Clock()
    args = TrainingArguments(
        output_dir=str(work / f"hf_{r}"),
        per_device_train_batch_size=MICRO,
        gradient_accumulation_steps=1,
        max_steps=warmup + steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.1,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",  # HF's default, as ours is fused AdamW
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=SEED,
        disable_tqdm=True,
        logging_nan_inf_filter=False,
        torch_compile=COMPILE,
    )
    hf_model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    InOrder(
        model=hf_model,
        args=args,
        train_dataset=OrderedRows(ordered, lambda j: rows[j]),
        data_collator=collate,
        callbacks=[clock],
    ).train()
    return _rates(clock.ends, warmup) | {"losses": clock.losses}


def _rates(step_ends: list[float], warmup: int) -> dict[str, float]:
    """Tokens/s from the median duration of the timed steps (end of one step to the end of the next),
    robust to the load spikes of a shared machine, and over the whole round; the same for both engines."""
    ends = step_ends[warmup - 1 :]
    durations = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return {
        "tokens_per_second": MICRO * SEQ / statistics.median(durations),
        "round_tokens_per_second": MICRO * SEQ * (len(ends) - 1) / (ends[-1] - ends[0]),
        "step_seconds": durations,
    }


def worker(engine: str, work: Path, warmup: int, steps: int) -> None:
    """Runs one round per line read on stdin and answers with one JSON line, so the parent can
    interleave the two engines' rounds (a busy machine then slows both alike)."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    fn = run_ours if engine == "ours" else run_hf
    for line in sys.stdin:
        res = fn(work, work / "data", work / "init", warmup, steps, int(line))
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("WORKER " + json.dumps(res), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile on both sides")
    parser.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--rounds", type=int)
    a = parser.parse_args()
    warmup = a.warmup or (3 if a.quick else 5)
    steps = a.steps or (20 if a.quick else 60)
    rounds = a.rounds or (3 if a.quick else 7)
    if a.worker:
        return worker(a.worker, Path(a.work), warmup, steps)
    threads = str(min(os.cpu_count() or 1, 8))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("DAGSTER_PIPES")}
    env["BENCH_TRAIN_COMPILE"] = "1" if a.compile else "0"
    print(
        f"tiny Llama {MODEL['hidden_size']}x{MODEL['num_layers']}, vocab {VOCAB}, seq {SEQ}, micro-batch {MICRO},"
        f" fp32 CPU, {threads} threads{', torch.compile on both sides' if a.compile else ''}; {warmup} warm-up + {steps} timed steps, {rounds} rounds per engine"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_inputs(work, rows=(warmup + steps) * MICRO + MICRO)
        procs = {
            engine: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.train",
                    "--worker",
                    engine,
                    "--work",
                    str(work),
                    "--warmup",
                    str(warmup),
                    "--steps",
                    str(steps),
                ],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for engine in ("ours", "hf")
        }
        rounds_out: dict[str, list[dict]] = {"ours": [], "hf": []}
        for r in range(rounds):
            for engine in ("ours", "hf") if r % 2 == 0 else ("hf", "ours"):
                proc = procs[engine]
                proc.stdin.write(f"{r}\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                while line and not line.startswith("WORKER "):
                    line = proc.stdout.readline()
                if not line:
                    sys.exit(f"{engine} worker failed:\n{proc.stderr.read()[-4000:]}")
                rounds_out[engine].append(json.loads(line[len("WORKER ") :]))
                print(
                    f"round {r + 1} {engine:<5} {rounds_out[engine][-1]['tokens_per_second']:>10,.0f} tokens/s"
                    f" (load average {os.getloadavg()[0]:.1f})"
                )
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
        out = {
            e: {
                "tokens_per_second": [x["tokens_per_second"] for x in rs],
                "round_tokens_per_second": [x["round_tokens_per_second"] for x in rs],
                "step_seconds": [t for x in rs for t in x["step_seconds"]],
                "losses": rs[0]["losses"],
                "peak_rss_mb": rs[-1]["peak_rss_mb"],
            }
            for e, rs in rounds_out.items()
        }
    print(
        f"{'engine':<12}{'tokens/s per round (median step)':<40}{'median':>9}{'whole rounds':>14}{'RSS MB':>8}"
    )
    for engine, name in (("ours", "ours"), ("hf", "HF Trainer")):
        r = out[engine]
        rounds_txt = ", ".join(f"{t:,.0f}" for t in r["tokens_per_second"])
        med, whole = (statistics.median(r[k]) for k in ("tokens_per_second", "round_tokens_per_second"))
        print(f"{name:<12}{rounds_txt:<40}{med:>9,.0f}{whole:>14,.0f}{r['peak_rss_mb']:>8,.0f}")
    ours, peer = (statistics.median(out[e]["tokens_per_second"]) for e in ("ours", "hf"))
    whole_ratio = statistics.median(out["ours"]["round_tokens_per_second"]) / statistics.median(
        out["hf"]["round_tokens_per_second"]
    )
    # The fastest tenth of each engine's timed steps (all rounds): what a step costs when the shared
    # machine leaves it alone; the headline stays the median.
    fast = {e: MICRO * SEQ / statistics.quantiles(out[e]["step_seconds"], n=10)[0] for e in ("ours", "hf")}
    print(f"fastest tenth of steps: ours {fast['ours']:,.0f} tokens/s, HF Trainer {fast['hf']:,.0f} tokens/s")
    n = min(len(out["ours"]["losses"]), len(out["hf"]["losses"]))
    pairs = list(zip(out["ours"]["losses"][:n], out["hf"]["losses"][:n], strict=True))
    diff = max(abs(x - y) for x, y in pairs)
    rel = max(abs(x - y) / abs(y) for x, y in pairs)
    agree = rel <= LOSS_RTOL
    print(
        f"per-step loss, first 3 steps: ours {[round(x, 4) for x in out['ours']['losses'][:3]]}, "
        f"HF {[round(x, 4) for x in out['hf']['losses'][:3]]}; max difference over {n} steps {diff:.2e} "
        f"(relative {rel:.2e}, bound {LOSS_RTOL:.0e})"
    )
    load = os.getloadavg()[0]
    print(
        f"RESULT name=train ours={ours:.0f} peer={peer:.0f} ratio={ours / peer:.3f} unit=tokens/s "
        f"higher_is_better=true compile={str(a.compile).lower()} loss_max_abs_diff={diff:.2e} "
        f"loss_max_rel_diff={rel:.2e} agreement={str(agree).lower()} steps_compared={n} "
        f"whole_round_ratio={whole_ratio:.3f} fast_step_ratio={fast['ours'] / fast['hf']:.3f} peak_rss_mb={out['ours']['peak_rss_mb']:.0f} "
        f"peer_peak_rss_mb={out['hf']['peak_rss_mb']:.0f} load_avg={load:.1f}"
    )
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
