"""Training throughput: our trainer against Hugging Face `Trainer`, same work.

    python -m benchmarks.train [--quick]

Four engines run on the same input: our trainer eager and with its `compile` option, HF `Trainer` on
its default options (eager) and with `torch_compile=True`. The headline `ratio` is ours with compile (our
best CPU option, named on the RESULT line as `ours_options`) against HF `Trainer` on its defaults
(`peer_options=default`); the same run also gives the ratio with the same options on both sides,
`eager_ratio` (both eager) and `same_options_ratio` (both compiled). Compiling costs time once, in the
first round's warm-up steps (not timed): `compile_s` is what it added to ours' first round, `peer_compile_s`
HF's, so a run of a few dozen steps may not earn it back (the trainer leaves `compile` off on CPU unless a
stage asks).

Equivalent work: the same tiny Llama (one set of initial weights saved once and loaded by all), the
same packed rows in the same order (HF `Trainer` gets our data order through a sequential sampler), the
same micro-batch, sequence length, fp32 on CPU, AdamW (fused, betas 0.9/0.95, weight decay 0.1 on
matrices), constant lr, gradient clipping at 1.0, loss logged every step. Each engine runs in its own
process (so peak RSS is its own) for several rounds, the engines' rounds interleaved (the order rotates
each round); a round times `--steps` optimizer steps after `--warmup` steps, each from the end of the
previous step to its own end, and takes the median step (the whole-round rate is printed too, and
`fast_step_ratio`: the headline pair's ratio over the fastest tenth of each engine's steps, what a step
costs when the shared machine leaves it alone). All engines log every step as a user's run would (ours:
its log line and `log.jsonl`; HF: its printed log dict), and read the loss every step.

Agreement: the largest difference between each engine's per-step training losses and HF's default run,
absolute and relative. Same weights, same batches, same math, but not the same order of sums: our trainer
computes the output head and cross-entropy in chunks (`training/loss.py`: no [B, T, V] logits tensor), HF
on the full logits, and compiled kernels round differently again, so losses agree to fp32 rounding, and
the small weight differences this leaves grow a little over the steps. The run fails (exit 1,
`agreement=false`) if any relative difference exceeds LOSS_RTOL.

Where ours is faster at the same options (about 1.2x, eager or compiled, on the 2-core machine): the
output head and the loss in one chunked pass, with no [B, T, V] logits (`training/loss.py`), and the next
steps' batches loaded ahead on a thread (`training/dataloader.py`).
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


# Engines by name: (trainer, compile); the headline pair is HEADLINE against PEER (HF on its defaults).
ENGINES = {
    "ours": ("ours", False),
    "ours_compile": ("ours", True),
    "hf": ("hf", False),
    "hf_compile": ("hf", True),
}
HEADLINE, PEER = "ours_compile", "hf"
LABELS = {
    "ours": "ours eager",
    "ours_compile": "ours compile",
    "hf": "HF defaults",
    "hf_compile": "HF torch_compile",
}


def run_ours(work: Path, data: Path, model: Path, warmup: int, steps: int, r: int, compile: bool) -> dict:
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
        compile=compile,
    )
    out = work / f"ours_{int(compile)}_{r}"
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


def run_hf(work: Path, data: Path, model: Path, warmup: int, steps: int, r: int, compile: bool) -> dict:
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
        output_dir=str(work / f"hf_{int(compile)}_{r}"),
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
        torch_compile=compile,
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
    interleave the engines' rounds (a busy machine then slows all alike)."""
    import time

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    trainer, compile = ENGINES[engine]
    fn = run_ours if trainer == "ours" else run_hf
    for line in sys.stdin:
        start = time.perf_counter()
        res = fn(work, work / "data", work / "init", warmup, steps, int(line), compile)
        res["wall_s"] = time.perf_counter() - start
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("WORKER " + json.dumps(res), flush=True)


def _loss_diff(losses: list[float], ref: list[float]) -> tuple[float, float, int]:
    n = min(len(losses), len(ref))
    pairs = list(zip(losses[:n], ref[:n], strict=True))
    return max(abs(x - y) for x, y in pairs), max(abs(x - y) / abs(y) for x, y in pairs), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=sorted(ENGINES), help=argparse.SUPPRESS)
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
    print(
        f"tiny Llama {MODEL['hidden_size']}x{MODEL['num_layers']}, vocab {VOCAB}, seq {SEQ}, micro-batch {MICRO},"
        f" fp32 CPU, {threads} threads; engines: {', '.join(LABELS.values())}; {warmup} warm-up + {steps} timed"
        f" steps, {rounds} rounds per engine"
    )
    names = list(ENGINES)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_inputs(work, rows=(warmup + steps) * MICRO + MICRO)
        procs = {
            engine: subprocess.Popen(
                [sys.executable, "-m", "benchmarks.train", "--worker", engine, "--work", str(work)]
                + ["--warmup", str(warmup), "--steps", str(steps)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for engine in names
        }
        rounds_out: dict[str, list[dict]] = {e: [] for e in names}
        for r in range(rounds):
            for engine in names[r % len(names) :] + names[: r % len(names)]:
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
                    f"round {r + 1} {LABELS[engine]:<18} {rounds_out[engine][-1]['tokens_per_second']:>10,.0f}"
                    f" tokens/s (load average {os.getloadavg()[0]:.1f})"
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
            # What the first round (model load, warm-up with compilation, timed steps) took beyond a later one.
            "first_round_extra_s": rs[0]["wall_s"] - statistics.median(x["wall_s"] for x in rs[1:])
            if len(rs) > 1
            else float("nan"),
        }
        for e, rs in rounds_out.items()
    }
    med = {e: statistics.median(out[e]["tokens_per_second"]) for e in names}
    whole = {e: statistics.median(out[e]["round_tokens_per_second"]) for e in names}
    print(
        f"{'engine':<20}{'tokens/s per round (median step)':<40}{'median':>9}{'whole rounds':>14}{'RSS MB':>8}"
    )
    for e in names:
        rounds_txt = ", ".join(f"{t:,.0f}" for t in out[e]["tokens_per_second"])
        print(
            f"{LABELS[e]:<20}{rounds_txt:<40}{med[e]:>9,.0f}{whole[e]:>14,.0f}{out[e]['peak_rss_mb']:>8,.0f}"
        )
    # The fastest tenth of each engine's timed steps (all rounds): what a step costs when the shared
    # machine leaves it alone; the headline stays the median.
    fast = {e: MICRO * SEQ / statistics.quantiles(out[e]["step_seconds"], n=10)[0] for e in names}
    print("fastest tenth of steps: " + ", ".join(f"{LABELS[e]} {fast[e]:,.0f}" for e in names) + " tokens/s")
    diffs = {e: _loss_diff(out[e]["losses"], out[PEER]["losses"]) for e in names if e != PEER}
    for e, (diff, rel, n) in diffs.items():
        print(
            f"per-step loss against {LABELS[PEER]}: {LABELS[e]} max difference over {n} steps {diff:.2e}"
            f" (relative {rel:.2e}, bound {LOSS_RTOL:.0e})"
        )
    print(
        f"per-step loss, first 3 steps: ours {[round(x, 4) for x in out['ours']['losses'][:3]]}, "
        f"HF {[round(x, 4) for x in out['hf']['losses'][:3]]}"
    )
    agree = all(rel <= LOSS_RTOL for _, rel, _ in diffs.values())
    diff, rel, n = diffs[HEADLINE]
    eager_rel = diffs["ours"][1]
    print(
        f"RESULT name=train ours={med[HEADLINE]:.0f} peer={med[PEER]:.0f} ratio={med[HEADLINE] / med[PEER]:.3f}"
        f" unit=tokens/s higher_is_better=true ours_options={LABELS[HEADLINE].split()[-1]} peer_options=default"
        f" eager_ratio={med['ours'] / med['hf']:.3f} same_options_ratio={med['ours_compile'] / med['hf_compile']:.3f}"
        f" ours_eager={med['ours']:.0f} peer_compile={med['hf_compile']:.0f}"
        f" loss_max_abs_diff={diff:.2e} loss_max_rel_diff={rel:.2e} eager_loss_max_rel_diff={eager_rel:.2e}"
        f" agreement={str(agree).lower()} steps_compared={n}"
        f" whole_round_ratio={whole[HEADLINE] / whole[PEER]:.3f} fast_step_ratio={fast[HEADLINE] / fast[PEER]:.3f}"
        f" compile_s={out['ours_compile']['first_round_extra_s']:.1f}"
        f" peer_compile_s={out['hf_compile']['first_round_extra_s']:.1f}"
        f" peak_rss_mb={out[HEADLINE]['peak_rss_mb']:.0f} peer_peak_rss_mb={out[PEER]['peak_rss_mb']:.0f}"
        f" load_avg={os.getloadavg()[0]:.1f}"
    )
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
