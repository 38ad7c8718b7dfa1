"""Multiple-choice scoring throughput: our scorer vs lm-evaluation-harness on the same items and model.

Equivalent work: the same ARC-shaped items (generated here from the demo texts: a question and four
choices of different lengths), the same tiny Llama object (the demo's model shape, random weights,
seeded), the same tokenizer (the bundled byte-level base, given a BOS post-processor so that lm-eval's
`add_bos_token` and our `add_bos` both score BOS + text), the same prompt ("Question: ...\\nAnswer:" and
" <choice>"), the same batch size and torch threads, float32 on the CPU. Ours: `read_items` + `score_items`; peer:
`lm_eval.simple_evaluate` with an `HFLM` wrapping the model object and a local task YAML over the same
JSONL (`TaskManager(include_path=...)`). Both compute acc and acc_norm. Agreement: the share of items
whose acc and acc_norm predictions are identical, and whether the accuracies are equal.

    python -m benchmarks.eval [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from lm_platform.demo.generate import read_paragraphs

BATCH = 16
TASK_YAML = """task: bench_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: items.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def make_items(path: Path, n: int, seed: int = 0) -> None:
    """ARC-shaped items: a question from one demo sentence, four choices of 1-12 words from others."""
    rng = random.Random(seed)
    sentences = [s.strip() for p in read_paragraphs("en") for s in p.split(".") if len(s.split()) > 6]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            q = rng.choice(sentences)
            choices = []
            for _ in range(4):
                words = rng.choice(sentences).split()
                k = rng.randint(1, min(12, len(words)))
                start = rng.randrange(len(words) - k + 1)
                choices.append(" ".join(words[start : start + k]))
            rec = {"id": str(i), "question": q + "?", "choices": choices, "answer": rng.randrange(4)}
            fh.write(json.dumps(rec) + "\n")


def model_and_tokenizer():
    import torch
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lm_platform.recipe.loader import BUNDLED_DIR

    tok = AutoTokenizer.from_pretrained(str(BUNDLED_DIR / "demo_data" / "base_tokenizer"))
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)]
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval(), tok


def run_ours(model, tok, items_file: Path):
    from lm_platform.evaluation.loglik import LoglikScorer
    from lm_platform.evaluation.multiple_choice import read_items, score_items

    t = time.perf_counter()
    res = score_items(LoglikScorer(model, tok, batch_size=BATCH), read_items(items_file))
    elapsed = time.perf_counter() - t
    preds = [(r["pred"]["acc"], r["pred"]["acc_norm"]) for r in res["items"]]
    return elapsed, preds, res["metrics"]["acc"]["score"], res["metrics"]["acc_norm"]["score"]


def run_lm_eval(model, tok, task_dir: Path):
    import numpy as np

    from lm_platform.evaluation.lm_eval_adapter import run_lm_eval as adapter

    t = time.perf_counter()
    res = adapter(model, tok, ["bench_mc"], task_dir, batch_size=BATCH, log_samples=True)
    elapsed = time.perf_counter() - t
    samples = sorted(res["samples"]["bench_mc"], key=lambda d: d["doc_id"])
    preds = []
    for d in samples:
        lls = np.array([float(x[0]) for x in d["filtered_resps"]])
        lens = np.array([float(len(c)) for c in d["doc"]["choices"]])
        preds.append((int(np.argmax(lls)), int(np.argmax(lls / lens))))
    task = res["per_task"]["bench_mc"]
    return elapsed, preds, task["acc"], task["acc_norm"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for both (default 1: shared machines)"
    )
    a = parser.parse_args()
    import logging

    import torch

    torch.set_num_threads(a.threads)

    logging.disable(logging.WARNING)
    n, rounds = (64, 2) if a.quick else (400, 5)
    model, tok = model_and_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_items(work / "items.jsonl", n)
        (work / "bench_mc.yaml").write_text(TASK_YAML, encoding="utf-8")
        run_lm_eval(model, tok, work)  # warm-up: imports, dataset cache
        ours_t, peer_t = [], []
        print(f"{'round':>5} {'ours items/s':>13} {'lm-eval items/s':>16}")
        for r in range(rounds):
            o = run_ours(model, tok, work / "items.jsonl")
            p = run_lm_eval(model, tok, work)
            ours_t.append(o[0])
            peer_t.append(p[0])
            print(f"{r:>5} {n / o[0]:>13.1f} {n / p[0]:>16.1f}")
    ours, peer = n / statistics.median(ours_t), n / statistics.median(peer_t)
    agree = sum(x == y for x, y in zip(o[1], p[1], strict=True)) / n
    same_acc = abs(o[2] - p[2]) < 1e-12 and abs(o[3] - p[3]) < 1e-12
    print(f"acc ours {o[2]:.4f} lm-eval {p[2]:.4f}; acc_norm ours {o[3]:.4f} lm-eval {p[3]:.4f}")
    print(
        f"RESULT name=eval ours={ours:.1f} peer={peer:.1f} ratio={ours / peer:.3f} unit=items/s "
        f"higher_is_better=true items={n} agreement={agree:.4f} identical_predictions={str(agree == 1.0).lower()} "
        f"identical_accuracy={str(same_acc).lower()}"
    )


if __name__ == "__main__":
    main()
