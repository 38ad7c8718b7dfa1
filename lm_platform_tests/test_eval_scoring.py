"""Evaluation core: log-likelihood scoring, multiple-choice exams, perplexity, generation, lm-eval."""

from __future__ import annotations

import json
import math

import pytest

from lm_platform.evaluation.loglik import LoglikScorer
from lm_platform.evaluation.multiple_choice import MCItem, build_prompt, continuation, read_items, score_items
from lm_platform_tests import eval_fixtures as fx


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- a hand-checked example -----------------------------------------------------------------------------


class CharTokenizer:
    """Characters as tokens: <s>=0, a=1, b=2, space=3."""

    bos_token_id = 0
    vocab = {"a": 1, "b": 2, " ": 3}

    def encode(self, text, add_special_tokens=False):
        return [self.vocab[c] for c in text]


class BigramModel:
    """Next-token probabilities depend only on the current token (rows below); logits are log p."""

    config = None
    P = [
        [0.1, 0.5, 0.2, 0.2],  # after <s>
        [0.1, 0.2, 0.6, 0.1],  # after a
        [0.1, 0.2, 0.3, 0.4],  # after b
        [0.1, 0.4, 0.4, 0.1],  # after space
    ]

    def eval(self):
        return self

    def __call__(self, input_ids):
        import torch

        class Out:
            pass

        out = Out()
        out.logits = torch.tensor(self.P).log()[input_ids]
        return out


def test_loglik_equals_hand_computation():
    scorer = LoglikScorer(BigramModel(), CharTokenizer(), batch_size=2)
    # "a" then " b": P(space | a) * P(b | space) = 0.1 * 0.4
    # "a" then "b": P(b | a) = 0.6;  "" then "ab": P(a | <s>) * P(b | a) = 0.5 * 0.6
    # "a " then "b": the trailing space moves to the continuation, so it equals the first request.
    res = scorer.score([("a", " b"), ("a", "b"), ("", "ab"), ("a ", "b"), ("ab", "a")])
    assert res[0].loglik == pytest.approx(math.log(0.1 * 0.4))
    assert res[1].loglik == pytest.approx(math.log(0.6))
    assert res[2].loglik == pytest.approx(math.log(0.5 * 0.6))
    assert res[3].loglik == pytest.approx(res[0].loglik)
    assert res[4].loglik == pytest.approx(math.log(0.2))
    assert [r.greedy for r in res] == [False, True, True, False, False]  # argmax after a is b, after <s> is a
    assert [r.tokens for r in res] == [2, 1, 2, 2, 1]


def test_multiple_choice_metrics_by_hand():
    """Question 'a', choices 'b' and 'ab' in choices mode (continuations ' b' and ' ab'):
    ll(' b') = log(0.1 * 0.4) = -3.22; ll(' ab') = log(0.1 * 0.4 * 0.6) = -3.73.
    acc picks 'b'; per character: -3.22 / 1 vs -3.73 / 2, so acc_norm picks 'ab'."""

    from lm_platform.evaluation import multiple_choice as mc

    item = MCItem("1", "a", ("b", "ab"), answer=1)
    # A bare format: the question is the prompt, the choice follows after a space.
    mc.FORMAT_DEFS["_bare"] = mc.Format(lambda _: "", lambda it, letters: it.question, " ")
    try:
        res = score_items(LoglikScorer(BigramModel(), CharTokenizer()), [item], fmt="_bare")
    finally:
        del mc.FORMAT_DEFS["_bare"]
    row = res["items"][0]
    assert row["loglik"] == pytest.approx([math.log(0.04), math.log(0.024)])
    assert row["pred"] == {"acc": 0, "acc_norm": 1, "acc_bytes": 1}
    assert res["metrics"]["acc"]["score"] == 0.0 and res["metrics"]["acc_norm"]["score"] == 1.0


# --- a real (tiny) model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return fx.tokenizer()


def test_batched_scoring_equals_one_forward_per_request(tok):
    import torch

    model = fx.tiny_model(tok, seed=3)
    requests = [
        ("Question: What is red?\nAnswer:", " an apple"),
        ("Question: What is red?\nAnswer:", " the sky at noon, mostly"),
        ("Hi", " there"),
        ("Câu hỏi: Thủ đô của Việt Nam?\nĐáp án:", " A"),
        ("Câu hỏi: Thủ đô của Việt Nam?\nĐáp án:", " B"),
        ("東京の朝は", "早い"),
    ]
    got = LoglikScorer(model, tok, batch_size=4).score(requests)
    for (ctx, cont), r in zip(requests, got, strict=True):
        c = [tok.bos_token_id, *tok.encode(ctx, add_special_tokens=False)]
        whole = [tok.bos_token_id, *tok.encode(ctx + cont, add_special_tokens=False)]
        n = len(whole) - len(c)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole[:-1]])).logits[0], -1)
        expected = sum(float(logp[i - 1, whole[i]]) for i in range(len(whole) - n, len(whole)))
        assert r.loglik == pytest.approx(expected, abs=1e-4)
        assert r.tokens == n


def test_letter_mode_runs_one_forward_per_question(tok):
    model = fx.tiny_model(tok)
    calls = []
    decoder = model.get_decoder()
    original = decoder.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    decoder.forward = counting
    items = read_items(fx.EVALS_DIR / "vmlu_vi.jsonl")
    res = score_items(LoglikScorer(model, tok, batch_size=64), items, fmt="vmlu", mode="letter")
    # 50 requests (five letters per question) in about one sequence per question: a letter that is two
    # tokens (space, letter) extends the one-token letters' input, so it shares their forward pass.
    assert len(items) <= sum(calls) < 2 * len(items)
    assert res["n"] == 10 and set(res["metrics"]) == {"acc"}
    assert set(res["per_subject"]) == {"Địa lý", "Toán học", "Vật lý", "Lịch sử", "Sinh học", "Văn học"}
    assert sum(s["n"] for s in res["per_subject"].values()) == 10


def test_planted_answers_are_found_and_shuffled_answers_are_chance(tok):
    model = fx.tiny_model(tok, seed=0)
    items = fx.planted_items(48, seed=0)
    fx.train_on_answers(model, tok, items, steps=40, seed=0)
    scorer = LoglikScorer(model, tok, batch_size=16)
    easy = score_items(scorer, items)
    assert easy["score"] >= 0.9, easy["metrics"]
    noise = score_items(scorer, fx.shuffled(items, seed=1))
    chance = noise["chance"]
    se = math.sqrt(chance * (1 - chance) / noise["n"])
    assert chance == 0.25
    assert abs(noise["score"] - chance) <= 3 * se, (noise["score"], se)
    # the same predictions either way: only the answers moved
    assert [r["pred"] for r in easy["items"]] == [r["pred"] for r in noise["items"]]


# --- prompt formats and input files ---------------------------------------------------------------------


def test_prompt_formats_of_each_shape():
    vmlu = read_items(fx.EVALS_DIR / "vmlu_vi.jsonl")
    p = build_prompt(vmlu[0], "vmlu", "letter")
    assert "môn Địa lý" in p and "\nE. Hải Phòng\n" in p and p.endswith("Đáp án:")
    assert continuation(vmlu[0], 4, "vmlu", "letter") == " E"
    assert vmlu[1].answer == 1 and len(vmlu[0].choices) == 5

    m3 = read_items(fx.EVALS_DIR / "m3exam_vi.jsonl")
    p = build_prompt(m3[0], "m3exam", "letter")
    assert p.startswith("Sau đây là câu hỏi trắc nghiệm") and "môn Ngữ văn" in p
    assert m3[0].context in p and "(B) Hội đình của làng" in p

    jc = read_items(fx.EVALS_DIR / "jcommonsenseqa_ja.jsonl")
    dev = read_items(fx.EVALS_DIR / "jcommonsenseqa_ja_dev.jsonl")
    from lm_platform.evaluation.multiple_choice import pick_shots

    shots = pick_shots(jc[0], dev, 2)
    p = build_prompt(jc[0], "jcommonsenseqa", "choices", shots)
    assert p.count("質問：") == 3 and "回答：歯ブラシ\n\n" in p and "4.浴室" in p
    assert continuation(jc[0], 0, "jcommonsenseqa", "choices") == "改札"  # no space before Japanese

    hs = read_items(fx.EVALS_DIR / "hellaswag_en.jsonl")
    assert (
        build_prompt(hs[0], "hellaswag", "choices")
        == "A man is standing at the kitchen counter with a loaf of bread. He"
    )
    arc = read_items(fx.EVALS_DIR / "arc_en.jsonl")
    assert build_prompt(arc[0], "plain", "choices").endswith(
        "Question: Which part of a plant takes in water from the soil?\nAnswer:"
    )
    assert arc[0].text_with_answer().endswith("the soil? roots")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"choices": ["a", "b"], "answer": 0}, "field 'question'"),
        ({"question": "q", "choices": "ab", "answer": 0}, "field 'choices'"),
        ({"question": "q", "choices": ["a", "b"], "answer": 2}, "out of range"),
        ({"question": "q", "choices": ["a", "b"], "answer": "Z"}, "field 'answer'"),
    ],
)
def test_bad_items_name_file_line_and_field(tmp_path, record, message):
    path = tmp_path / "exam.jsonl"
    good = {"question": "q", "choices": ["a", "b"], "answer": "B"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"exam.jsonl:2: .*{message}"):
        read_items(path)


# --- perplexity, generation, lm-eval --------------------------------------------------------------------


def test_batched_perplexity_equals_one_document_at_a_time(tok):
    from lm_platform.evaluation.perplexity import perplexity_of

    model = fx.tiny_model(tok, seed=1)
    model.config.max_position_embeddings = 16  # several windows per document
    docs = [
        ("vi", "Hôm nay trời đẹp và gió mát."),
        ("en", "The old library"),
        ("en", "A short one that is longer."),
    ]
    one = perplexity_of(model, tok, docs, batch_size=1)
    many = perplexity_of(model, tok, docs, batch_size=8)
    assert many["score"] == pytest.approx(one["score"], rel=1e-5)
    assert many["per_language"]["en"]["n"] == 2 and many["tokens"] == one["tokens"]


def test_perplexity_headlines_bits_per_byte_which_does_not_depend_on_the_tokenizer(tok):
    """Bits per byte: the summed negative log-likelihood in bits over the texts' UTF-8 bytes (a model
    that cuts text into more tokens is not favoured by a lower per-token perplexity)."""
    from lm_platform.evaluation.perplexity import perplexity_of

    model = fx.tiny_model(tok, seed=1)
    docs = [("vi", "Hôm nay trời đẹp và gió mát."), ("en", "The old library")]
    res = perplexity_of(model, tok, docs)
    assert res["metric"] == "bits_per_byte" and res["higher_is_better"] is False
    n_bytes = sum(len(t.encode("utf-8")) for _, t in docs)
    assert res["bytes"] == n_bytes > sum(len(t) for _, t in docs)  # UTF-8 bytes, not characters
    nats = res["mean_nll"] * res["tokens"]
    assert res["score"] == res["bits_per_byte"] == pytest.approx(nats / math.log(2) / n_bytes)
    assert res["perplexity"] == pytest.approx(math.exp(res["mean_nll"]))
    vi = res["per_language"]["vi"]
    assert vi["bytes"] == len(docs[0][1].encode("utf-8"))
    assert vi["bits_per_byte"] == pytest.approx(vi["mean_nll"] * vi["tokens"] / math.log(2) / vi["bytes"])


def test_generation_stores_greedy_and_sampled_outputs(tok):
    from lm_platform.evaluation.generation import generate_outputs, read_prompts, side_by_side

    model = fx.tiny_model(tok, seed=2)
    prompts = read_prompts(fx.EVALS_DIR / "generation_prompts.jsonl")
    a = generate_outputs(model, tok, prompts, max_new_tokens=6, seed=0)
    b = generate_outputs(model, tok, prompts, max_new_tokens=6, seed=0)
    assert [s["sampled"] for s in a["samples"]] == [s["sampled"] for s in b["samples"]]  # seeded
    assert (
        all(s["greedy"] for s in a["samples"])
        and a["n"] == 4
        and set(a["per_language"]) == {"vi", "ja", "en"}
    )
    table = side_by_side({"main": a["samples"], "anneal": b["samples"]})
    assert table[0]["prompt"] == "Hôm nay ở Hà Nội" and table[0]["main"] == table[0]["anneal"]


def test_lm_eval_adapter_scores_a_local_task_like_ours(tok):
    pytest.importorskip("lm_eval")
    from tokenizers.processors import TemplateProcessing

    from lm_platform.evaluation.lm_eval_adapter import run_lm_eval

    model = fx.tiny_model(tok, seed=5)
    # lm-eval adds BOS through the tokenizer's own post-processor; give it one so both score BOS + text.
    tok = fx.tokenizer()
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)]
    )
    theirs = run_lm_eval(model, tok, ["demo_arc_en"], fx.EVALS_DIR / "lm_eval", log_samples=True)
    ours = score_items(LoglikScorer(model, tok), read_items(fx.EVALS_DIR / "arc_en.jsonl"))
    assert theirs["n"] == ours["n"] == 8
    assert theirs["score"] == pytest.approx(ours["metrics"]["acc"]["score"])
    assert theirs["per_task"]["demo_arc_en"]["acc_norm"] == pytest.approx(
        ours["metrics"]["acc_norm"]["score"]
    )
    samples = sorted(theirs["samples"]["demo_arc_en"], key=lambda d: d["doc_id"])
    their_ll = [[float(x[0]) for x in d["filtered_resps"]] for d in samples]
    for mine, other in zip((r["loglik"] for r in ours["items"]), their_ll, strict=True):
        assert mine == pytest.approx(other, abs=1e-4)
    with pytest.raises(ValueError, match="not defined under"):
        run_lm_eval(model, tok, ["no_such_task"], fx.EVALS_DIR / "lm_eval")
