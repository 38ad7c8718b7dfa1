"""EEVE stage chaining on the demo texts: a base model on a base tokenizer, the tokenizer extended with
EEVE, then stages 3 -> 4 -> 6 -> 7 -> annealing, each starting from the previous stage's checkpoint, each
lowering the held-out loss, with generation samples written at every checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm_platform.training.train import Reporter, train
from lm_platform_tests.training_fixtures import (
    TINY,
    base_tokenizer,
    eeve_tokenizer,
    make_job,
    pack_demo,
)

GENERATION = {
    "prompts": ["Hôm nay ở Hà Nội", "The old library"],
    "max_new_tokens": 12,
    "do_sample": True,
    "temperature": 0.8,
    "top_k": 20,
    "top_p": 0.95,
    "seed": 7,
}
EEVE_STAGES = [
    ("eeve_3", "new_embeddings", 1e-2),
    ("eeve_4", "output_embeddings", 5e-3),
    ("eeve_6", "all", 3e-3),
    ("eeve_7", "all_but_embeddings", 3e-3),
]
BATCH = dict(micro_batch_size=16, warmup_steps=2, log_every=20, weight_decay=0.1)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    base_tok = base_tokenizer(tmp / "tok_base")
    pack_demo(base_tok, tmp / "data_base")
    base = make_job(
        tmp,
        "base",
        tmp / "data_base",
        base_tok,
        {"kind": "scratch", "model": TINY},
        lr=1e-2,
        token_budget=60 * 16 * 32,
        checkpoint_every=30,
        **BATCH,
    )
    results = {"base": train(base, Reporter())}
    spec = eeve_tokenizer(base_tok, tmp / "tok_eeve")
    pack_demo(tmp / "tok_eeve", tmp / "data_eeve")
    pack_demo(tmp / "tok_eeve", tmp / "data_anneal", langs=("vi",))  # annealing has its own blend
    jobs = {"base": base}
    prev = base
    for name, policy, lr in EEVE_STAGES:
        job = make_job(
            tmp,
            name,
            tmp / "data_eeve",
            tmp / "tok_eeve",
            {"kind": "pretrained", "path": prev["output_dir"]},
            generation=GENERATION,
            trainable=policy,
            lr=lr,
            token_budget=30 * 16 * 32,
            checkpoint_every=15,
            **BATCH,
        )
        results[name], jobs[name], prev = train(job, Reporter()), job, job
    anneal = make_job(
        tmp,
        "anneal",
        tmp / "data_anneal",
        tmp / "tok_eeve",
        {"kind": "pretrained", "path": prev["output_dir"]},
        generation=GENERATION,
        lr=1e-3,
        min_lr_ratio=0.0,
        schedule="linear",
        token_budget=20 * 16 * 32,
        **BATCH,
    )
    results["anneal"], jobs["anneal"] = train(anneal, Reporter()), anneal
    return {"results": results, "jobs": jobs, "spec": spec}


def test_every_stage_lowers_the_held_out_loss(chain):
    r = chain["results"]
    for stage in ["base", *(s for s, _, _ in EEVE_STAGES), "anneal"]:
        assert r[stage]["final_val_loss"] < r[stage]["initial_val_loss"], (stage, r[stage])
    # The chain as a whole: the extended model ends well below where EEVE stage 3 started.
    assert r["anneal"]["final_val_loss"] < r["eeve_3"]["initial_val_loss"] - 0.1


def test_stages_start_from_the_previous_checkpoint_with_the_extended_vocabulary(chain):
    from transformers import AutoConfig

    jobs, spec = chain["jobs"], chain["spec"]
    order = ["base", *(s for s, _, _ in EEVE_STAGES), "anneal"]
    for before, after in zip(order, order[1:], strict=False):
        assert jobs[after]["init"]["path"] == jobs[before]["output_dir"]
    vocab = spec["base_vocab_size"] + len(spec["new_tokens"])
    assert AutoConfig.from_pretrained(jobs["base"]["output_dir"]).vocab_size == spec["base_vocab_size"]
    for stage in order[1:]:
        assert AutoConfig.from_pretrained(jobs[stage]["output_dir"]).vocab_size == vocab
    trainable = {s: chain["results"][s]["trainable_parameters"] for s in order}
    assert trainable["eeve_3"] == 2 * len(spec["new_tokens"]) * TINY["hidden_size"]
    assert trainable["eeve_4"] == vocab * TINY["hidden_size"]
    assert trainable["eeve_7"] == trainable["eeve_6"] - 2 * vocab * TINY["hidden_size"]


def test_generation_samples_are_written_at_every_checkpoint(chain):
    job = chain["jobs"]["eeve_6"]
    steps = sorted(Path(job["run_dir"]).glob("step_*"))
    assert [p.name for p in steps] == ["step_00000015", "step_00000030"]
    for ckpt in [*steps, Path(job["output_dir"])]:
        samples = json.loads((ckpt / "samples.json").read_text())
        assert [s["prompt"] for s in samples] == GENERATION["prompts"]
        assert all(s["completion"].strip() for s in samples)
    # Same prompts, same seed, same weights: the final checkpoint's samples are its last step's.
    assert json.loads((steps[-1] / "samples.json").read_text()) == json.loads(
        (Path(job["output_dir"]) / "samples.json").read_text()
    )
    # The final checkpoint is a complete HF directory with the extended tokenizer, curve and plot.
    out = Path(job["output_dir"])
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "eeve.json",
        "optimizer.safetensors",
        "trainer_state.json",
        "metrics.json",
        "loss_curve.png",
    ):
        assert (out / name).exists(), name
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_materialization_metadata_reports_loss_tokens_curve_and_samples(chain):
    from lm_platform.training.train import materialization_metadata

    job, metrics = chain["jobs"]["anneal"], chain["results"]["anneal"]
    meta = materialization_metadata(job, metrics)
    assert meta["final_val_loss"]["raw_value"] == metrics["final_val_loss"]
    assert meta["tokens_seen"]["raw_value"] == metrics["tokens_seen"] == 20 * 16 * 32
    assert meta["loss_curve"]["raw_value"].count("\n") >= 10
    assert meta["loss_curve_plot"]["raw_value"].startswith("![loss curve](data:image/png;base64,")
    assert "Hôm nay ở Hà Nội" in meta["samples"]["raw_value"]
    log = [json.loads(line) for line in (Path(job["run_dir"]) / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [20] and {"loss", "lr", "grad_norm", "tokens_per_second"} <= set(
        log[0]
    )


def test_tokens_seen_accumulate_along_the_stage_chain_and_on_the_leaderboard(chain, tmp_path):
    from lm_platform.atomic import write_json
    from lm_platform.evaluation.leaderboard import leaderboard_rows

    r, jobs = chain["results"], chain["jobs"]
    order = ["base", *(s for s, _, _ in EEVE_STAGES), "anneal"]
    total = 0
    for stage in order:
        total += r[stage]["tokens_seen"]
        assert r[stage]["tokens_seen_total"] == total, stage
    # A step checkpoint of a later stage counts the stages before it too.
    step_dir = sorted(Path(jobs["eeve_6"]["run_dir"]).glob("step_*"))[0]
    state = json.loads((step_dir / "trainer_state.json").read_text())
    assert state["tokens_before"] == r["eeve_4"]["tokens_seen_total"]
    # The leaderboard plots each version at its cumulative count, not its stage's own. Its rows are scores
    # of the weights each version names now, so the versions' model directories sit where the platform
    # keeps them (`checkpoint/<stage>`) and each score records their weights.
    from lm_platform.evaluation.versions import model_dir, weights_hash
    from lm_platform.paths import Layout

    layout = Layout(tmp_path, "chain")
    for stage in ("eeve_3", "anneal"):
        where = model_dir(layout, stage)
        where.parent.mkdir(parents=True, exist_ok=True)
        where.symlink_to(jobs[stage]["output_dir"], target_is_directory=True)
        write_json(
            layout.eval_result("ppl", stage),
            {
                "version": stage,
                "model": str(where),
                "score": 1.0,
                "tokens_seen": 1,
                "weights": weights_hash(where),
            },
        )
    rows = leaderboard_rows(["ppl"], order, layout)
    assert [(x["version"], x["tokens_seen"]) for x in rows] == [
        ("eeve_3", r["eeve_3"]["tokens_seen_total"]),
        ("anneal", total),
    ]
