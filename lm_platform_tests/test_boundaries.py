"""Edges of packing and scoring: a loss span's first token (byte-level tokens carry the space before a
word) and tokenizers without a BOS (one boundary token, shared by packing and evaluation)."""

from __future__ import annotations

import pytest

from lm_platform.data.blending.blend import blend_tokens
from lm_platform.data.blending.pack import load_split, load_split_mask, pack_tokens
from lm_platform.data.blending.tokens import tokenize_source
from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform_tests.pack_fixtures import pack_text

PROMPT = "Question: what is pho?"
ANSWER = "Answer: a Vietnamese noodle soup."
TEXT = f"{PROMPT} {ANSWER}"  # the answer's first token is "ĠAnswer": it starts at the space


@pytest.fixture(scope="module")
def bytelevel_dir(tmp_path_factory):
    """A byte-level BPE tokenizer with an EOS and no BOS (as Qwen's and GPT-2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT, "Some other plain text about soup and noodles."] * 20, trainer)
    out = tmp_path_factory.mktemp("bytelevel") / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(str(out))
    return out


def _chat_doc():
    return make_doc("q/1", TEXT, "sft", "CC0-1.0", "en", meta={"loss_spans": [[len(PROMPT) + 1, len(TEXT)]]})


def _trained_text(tokenizer_dir, rows, mask) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    flat, fmask = rows.reshape(-1), mask.reshape(-1)
    return tok.decode(flat[fmask == 1].tolist(), skip_special_tokens=True)


def test_a_loss_span_from_token_shards_trains_its_first_token(bytelevel_dir, tmp_path):
    with DocWriter(tmp_path / "d.parquet") as w:
        w.write(_chat_doc())
    tokenize_source(tmp_path / "d.parquet", bytelevel_dir, tmp_path / "tokens", source="sft")
    blend_tokens({"sft": tmp_path / "tokens"}, {"sft": 1.0}, 10**6, tmp_path / "blend")
    pack_tokens(
        tmp_path / "blend",
        {"sft": tmp_path / "tokens"},
        bytelevel_dir,
        tmp_path / "ds",
        64,
        0.0,
        shuffle_buffer=0,
        loss_mask=True,
    )
    trained = _trained_text(
        bytelevel_dir, load_split(tmp_path / "ds", "train"), load_split_mask(tmp_path / "ds", "train")
    )
    assert trained.strip() == ANSWER


def test_few_shot_examples_without_ids_are_the_same_for_every_item(tmp_path):
    """Items without `id` are numbered by line in each file: test item i and dev item i share that
    number, which must not make item i lose dev item i from its shots."""
    import json

    from lm_platform.evaluation.multiple_choice import pick_shots, read_items

    def write(path, questions):
        path.write_text(
            "".join(json.dumps({"question": q, "choices": ["x", "y"], "answer": 0}) + "\n" for q in questions)
        )

    write(tmp_path / "test.jsonl", [f"test question {i}?" for i in range(3)])
    write(tmp_path / "dev.jsonl", [f"dev question {i}?" for i in range(3)])
    items, dev = read_items(tmp_path / "test.jsonl"), read_items(tmp_path / "dev.jsonl")
    shots = [[s.question for s in pick_shots(item, dev, 2)] for item in items]
    assert shots == [["dev question 0?", "dev question 1?"]] * 3
    # the same question in the dev file is still never its own example
    write(tmp_path / "dev2.jsonl", ["test question 1?", "dev question 5?"])
    assert [s.question for s in pick_shots(items[1], read_items(tmp_path / "dev2.jsonl"), 2)] == [
        "dev question 5?"
    ]


def test_without_a_bos_packing_and_scoring_share_one_boundary_token(bytelevel_dir, tmp_path):
    """A tokenizer with EOS and no BOS: packing separates documents by EOS alone, and perplexity,
    generation and log-likelihood condition on that same EOS (they crashed on a `None` id, and
    log-likelihood scored without the boundary training put before every document)."""
    import torch
    from transformers import AutoTokenizer

    from lm_platform.evaluation.generation import generate_outputs
    from lm_platform.evaluation.loglik import LoglikScorer
    from lm_platform.evaluation.perplexity import perplexity_of
    from lm_platform_tests.eval_fixtures import tiny_model

    tok = AutoTokenizer.from_pretrained(str(bytelevel_dir))
    assert tok.bos_token_id is None
    eos = tok.eos_token_id
    texts = ["Some other plain text about soup.", "Noodles and soup."]
    with DocWriter(tmp_path / "b.parquet") as w:
        w.write_all([make_doc(f"d/{i}", t, "web", "CC0-1.0", "en") for i, t in enumerate(texts)])
    index = pack_text(tmp_path / "b.parquet", bytelevel_dir, tmp_path / "ds", 256, 0.0)
    assert index["boundary_tokens"] == 1
    flat = load_split(tmp_path / "ds", "train").reshape(-1)[: index["tokens"]].tolist()
    expected = []
    for t in texts:
        expected += [*tok.encode(t, add_special_tokens=False), eos]
    assert flat == expected  # ids + EOS per document: each follows the previous one's EOS

    torch.manual_seed(0)
    model = tiny_model(tok)
    scorer = LoglikScorer(model, tok)
    ctx, cont = scorer.encode_pair("Noodles", " and soup.")
    assert ctx[0] == eos and ctx[1:] == tok.encode("Noodles", add_special_tokens=False)
    # the empty context conditions on the boundary token, as the first token of a document trains
    assert scorer.encode_pair("", "Noodles")[0] == [eos]

    ppl = perplexity_of(model, tok, [("en", texts[1])])
    ids = [eos, *tok.encode(texts[1], add_special_tokens=False), eos]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids[:-1]])).logits[0].float()
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="mean")
    assert ppl["tokens"] == len(ids) - 1 and abs(ppl["mean_nll"] - float(nll)) < 1e-4

    out = generate_outputs(model, tok, [{"id": "1", "lang": "en", "prompt": "Noodles"}], max_new_tokens=3)
    assert out["n"] == 1 and len(out["samples"]) == 1
