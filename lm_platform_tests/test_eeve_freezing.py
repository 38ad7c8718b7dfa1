"""EEVE initialisation of new embedding rows, and each EEVE stage's trainable-parameter policy: exactly the
intended tensors and rows change, everything else stays bit-identical, with weight decay on."""

from __future__ import annotations

import pytest
import torch

from lm_platform.modeling.eeve import read_eeve
from lm_platform.modeling.freeze import apply_policy
from lm_platform.modeling.init import build_model
from lm_platform.training.train import Reporter, train
from lm_platform_tests.training_fixtures import (
    load_weights,
    make_job,
    synthetic_dataset,
    synthetic_eeve,
    tiny_checkpoint,
)

BASE_VOCAB, NEW = 64, 12


@pytest.mark.parametrize("tied", [False, True])
def test_eeve_init_mean_of_pieces_in_and_first_piece_out(tmp_path, tied):
    base = load_weights(tiny_checkpoint(tmp_path / "base", BASE_VOCAB, tied=tied))
    spec = synthetic_eeve(tmp_path / "tok", BASE_VOCAB, NEW)
    model = build_model(
        {"kind": "pretrained", "path": str(tmp_path / "base")},
        BASE_VOCAB + NEW,
        1,
        2,
        3,
        0,
        str(tmp_path / "tok"),
    )
    inp = model.get_input_embeddings().weight.detach()
    out = model.get_output_embeddings().weight.detach()
    assert inp.shape[0] == out.shape[0] == model.config.vocab_size == BASE_VOCAB + NEW
    base_in = base["model.embed_tokens.weight"]
    assert torch.equal(inp[:BASE_VOCAB], base_in)  # base rows untouched
    for t in spec["new_tokens"]:
        assert torch.allclose(inp[t["id"]], base_in[t["pieces"]].mean(0), atol=1e-7)
    if tied:  # one shared row: the recipe's default rule is the input (mean) rule
        assert out.data_ptr() == inp.data_ptr()
    else:
        base_out = base["lm_head.weight"]
        assert torch.equal(out[:BASE_VOCAB], base_out)
        for t in spec["new_tokens"]:
            assert torch.equal(out[t["id"]], base_out[t["pieces"][0]])


def test_tied_embeddings_can_use_the_output_rule(tmp_path):
    base = load_weights(tiny_checkpoint(tmp_path / "base", BASE_VOCAB, tied=True))
    spec = synthetic_eeve(tmp_path / "tok", BASE_VOCAB, NEW)
    model = build_model(
        {"kind": "pretrained", "path": str(tmp_path / "base")},
        BASE_VOCAB + NEW,
        1,
        2,
        3,
        0,
        str(tmp_path / "tok"),
        tied_rule="output",
    )
    inp = model.get_input_embeddings().weight.detach()
    for t in spec["new_tokens"]:
        assert torch.equal(inp[t["id"]], base["model.embed_tokens.weight"][t["pieces"][0]])


def test_vocabulary_mismatch_without_eeve_is_a_clear_error(tmp_path):
    tiny_checkpoint(tmp_path / "base", BASE_VOCAB)
    with pytest.raises(ValueError, match="eeve.json"):
        build_model(
            {"kind": "pretrained", "path": str(tmp_path / "base")}, BASE_VOCAB + 5, 1, 2, 3, 0, str(tmp_path)
        )


def test_malformed_eeve_names_the_field(tmp_path):
    spec = synthetic_eeve(tmp_path, BASE_VOCAB, 3)
    spec["new_tokens"][1]["id"] = BASE_VOCAB + 7
    (tmp_path / "eeve.json").write_text(__import__("json").dumps(spec))
    with pytest.raises(ValueError, match=r"new_tokens.1.id"):
        read_eeve(tmp_path)


def test_new_embeddings_policy_needs_the_base_vocabulary(tmp_path):
    model = build_model(
        {
            "kind": "scratch",
            "model": {**__import__("lm_platform_tests.training_fixtures", fromlist=["TINY"]).TINY},
        },
        BASE_VOCAB,
        1,
        2,
        3,
        0,
    )
    with pytest.raises(ValueError, match="eeve.json"):
        apply_policy(model, "new_embeddings", None)


# What each EEVE stage may change: {tensor name: "all" | "new_rows"}; every other tensor must be bit-identical.
LAYER_TENSORS = "layers"
EXPECTED = {
    "new_embeddings": {"model.embed_tokens.weight": "new_rows", "lm_head.weight": "new_rows"},
    "output_embeddings": {"lm_head.weight": "all"},
    "all": "everything",
    "all_but_embeddings": "everything_but_embeddings",
}


def _run_stage(tmp_path, policy, tied, steps=4):
    vocab = BASE_VOCAB + NEW
    tiny_checkpoint(tmp_path / "base", BASE_VOCAB, tied=tied)
    synthetic_eeve(tmp_path / "tok", BASE_VOCAB, NEW)
    data = synthetic_dataset(tmp_path / "data", vocab, rows=4 * steps)
    init = {"kind": "pretrained", "path": str(tmp_path / "base")}
    # The starting point: the EEVE-initialised model, exactly as the trainer builds it.
    start = build_model(init, vocab, 1, 2, 3, 0, str(tmp_path / "tok")).state_dict()
    start = {k: v.clone() for k, v in start.items()}
    job = make_job(
        tmp_path, "eeve", data, tmp_path / "tok", init, trainable=policy, weight_decay=0.1, epochs=1
    )
    metrics = train(job, Reporter())
    assert metrics["steps"] == steps
    from transformers import AutoModelForCausalLM

    after = AutoModelForCausalLM.from_pretrained(job["output_dir"]).state_dict()
    return start, after, job


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("policy", ["new_embeddings", "output_embeddings", "all", "all_but_embeddings"])
def test_each_eeve_stage_changes_exactly_its_parameters(tmp_path, policy, tied):
    start, after, job = _run_stage(tmp_path, policy, tied)
    embeddings = {"model.embed_tokens.weight", "lm_head.weight"}
    for name, before in start.items():
        now = after[name]
        is_emb = name in embeddings
        if policy == "all":
            expect = "all"
        elif policy == "all_but_embeddings":
            expect = "none" if is_emb else "all"
        elif policy == "output_embeddings":
            # Stage 4: all output embeddings; tied, the shared matrix is also the input matrix: only the
            # rows EEVE added train, the base tokens' (input) embeddings stay exactly as they were.
            if tied:
                expect = "new_rows" if is_emb else "none"
            else:
                expect = "all" if name == "lm_head.weight" else "none"
        else:  # Stage 3: new rows of the input and output embeddings only
            expect = "new_rows" if is_emb else "none"
        if expect == "none":
            assert torch.equal(now, before), f"{policy}: frozen {name} changed"
        elif expect == "new_rows":
            assert torch.equal(now[:BASE_VOCAB], before[:BASE_VOCAB]), (
                f"{policy}: base rows of {name} changed"
            )
            changed = (now[BASE_VOCAB:] != before[BASE_VOCAB:]).any(dim=1)
            assert changed.all(), f"{policy}: not every new row of {name} was trained"
        else:
            if before.ndim == 1 and "norm" in name and torch.equal(now, before):
                pytest.fail(f"{policy}: {name} should train")
            assert not torch.equal(now, before), f"{policy}: {name} should have changed"


@pytest.mark.parametrize(
    ("policy", "tied", "matrices"), [("new_embeddings", False, 2), ("output_embeddings", True, 1)]
)
def test_frozen_rows_have_no_optimizer_state(tmp_path, policy, tied, matrices):
    """Stages that train embedding rows keep Adam moments for the new rows only, not for the base
    vocabulary (stage 3 of SmolLM2 would otherwise hold moments for 49K rows while 4.7M parameters train)."""
    from safetensors.torch import load_file

    _, _, job = _run_stage(tmp_path, policy, tied=tied)
    opt = load_file(f"{job['output_dir']}/optimizer.safetensors")
    moments = [v for k, v in opt.items() if k.endswith("exp_avg") or k.endswith("exp_avg_sq")]
    assert len(moments) == 2 * matrices  # the embedding matrices, two moments each: nothing else
    for m in moments:
        assert m.shape == (NEW, 32)
        assert torch.count_nonzero(m) > 0


def test_tied_output_embeddings_without_eeve_is_refused(tmp_path):
    from lm_platform_tests.training_fixtures import TINY

    model = build_model(
        {"kind": "scratch", "model": {**TINY, "tie_word_embeddings": True}}, BASE_VOCAB, 1, 2, 3, 0
    )
    with pytest.raises(ValueError, match="tied embeddings.*eeve.json"):
        apply_policy(model, "output_embeddings", None)
