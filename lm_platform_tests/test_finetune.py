"""Instruction tuning and merging on tiny models: assistant-only loss masks, LoRA adapters (loss falls,
merged weights equal base + adapter, ties kept), the two-stage mergekit merge on an extended vocabulary,
local paths only, the model card's licenses and token counts, the export, and the hub push."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lm_platform.finetune.chat import (
    CHATML_TEMPLATE,
    IM_END,
    batches,
    ensure_chat_tokens,
    read_instructions,
    tokenize,
)
from lm_platform.finetune.lora import load_with_adapter, masked_loss, train_adapter
from lm_platform.recipe.finetune import LoraConfig, MergeConfig, SFTConfig
from lm_platform_tests.finetune_fixtures import (
    ALPACA,
    BASE_TOKENIZER,
    CHAT,
    NEW_TOKENS,
    tiny_model,
    write_jsonl,
)

X = torch.tensor([[3, 10, 200, 1024, 1027, 1, 2, 50, 1029]])


def _logits(model_or_dir):
    from transformers import AutoModelForCausalLM

    m = model_or_dir
    if isinstance(m, (str, Path)):
        m = AutoModelForCausalLM.from_pretrained(m, dtype=torch.float32)
    with torch.no_grad():
        return m.eval()(X).logits


def test_exactly_the_assistant_tokens_carry_loss(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(BASE_TOKENIZER)
    assert ensure_chat_tokens(tok) == []  # the base has ChatML's tokens: nothing added, ids unchanged
    conv = read_instructions(write_jsonl(tmp_path / "c.jsonl", CHAT), "chat")[0]
    ex = tokenize(tok, conv, max_len=512)
    # The whole rendered text is the template's, token for token.
    assert tok.apply_chat_template(conv, tokenize=False, chat_template=CHATML_TEMPLATE) == tok.decode(ex.ids)
    # Walk the tokens: a token carries loss iff it lies inside an assistant turn (content + <|im_end|>).
    pieces = [tok.decode([i]) for i in ex.ids]
    inside, expected = False, []
    text = ""
    for p in pieces:
        starts_turn = text.endswith("<|im_start|>assistant\n")
        inside = inside or starts_turn
        expected.append(int(inside))
        if inside and p == IM_END:
            inside = False
        text += p
    assert ex.mask.tolist() == expected
    trained = tok.decode(ex.ids[ex.mask == 1])
    assistant = [m["content"] + IM_END for m in conv if m["role"] == "assistant"]
    assert trained == "".join(assistant)
    # The loss sees exactly those tokens: per-token loss is non-zero only where the mask is 1 (shifted).
    batch = next(batches([ex], 512, 1, tok.pad_token_id, False, __import__("numpy").random.default_rng(0)))
    labels = torch.from_numpy(batch["labels"])
    logits = torch.randn(1, labels.shape[1], len(tok))
    _, per_token = masked_loss(logits, labels)
    assert ((per_token[0] != 0).int().tolist()) == ex.mask[1:].tolist()


def test_chat_tokens_are_appended_without_moving_ids(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    before = tok.get_vocab()
    added = ensure_chat_tokens(tok)
    assert added == [len(before), len(before) + 1]
    assert all(tok.get_vocab()[t] == i for t, i in before.items())
    assert tok.chat_template == CHATML_TEMPLATE
    assert tok("<|im_start|>hello<|im_end|>", add_special_tokens=False)["input_ids"] == [3, 1, 4]


def test_alpaca_records_and_errors_name_the_line(tmp_path):
    conv = read_instructions(write_jsonl(tmp_path / "a.jsonl", ALPACA), "alpaca", system_prompt="Be brief.")
    assert conv[1][1]["content"] == "Add the numbers.\n\n2 and 3" and conv[1][0]["role"] == "system"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ALPACA[0]) + "\n" + json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2.output"):
        read_instructions(bad, "alpaca")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tied tiny Llama on an extended vocabulary, a LoRA adapter trained on it, and a second model."""
    d = tmp_path_factory.mktemp("ft")
    base = tiny_model(d / "checkpoint" / "base", seed=0)
    data = write_jsonl(d / "chat.jsonl", CHAT)
    res = train_adapter(
        base,
        data,
        "chat",
        d / "adapter" / "vi",
        LoraConfig(rank=4, alpha=8, target="all_linear"),
        SFTConfig(lr=2e-2, max_steps=30, micro_batch_size=4, seed=1),
    )
    other = d / "checkpoint" / "other"
    shutil.copytree(base, other)
    from safetensors.torch import load_file, save_file

    sd = load_file(other / "model.safetensors")
    g = torch.Generator().manual_seed(5)
    save_file(
        {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in sd.items()}, other / "model.safetensors"
    )
    return d, base, res


def test_adapter_loss_falls_and_merged_weights_match_base_plus_adapter(models):
    from transformers import AutoModelForCausalLM

    d, base, res = models
    assert res.final_loss < res.initial_loss - 0.1, res.curve
    # The ChatML tokens the base vocabulary has (ids 1, 2) but pretraining never used train too.
    assert res.new_token_ids == [1, 2, *range(1024, 1024 + len(NEW_TOKENS))]
    merged = AutoModelForCausalLM.from_pretrained(d / "adapter" / "vi", dtype=torch.float32)
    assert torch.allclose(_logits(merged), _logits(load_with_adapter(base, d / "adapter" / "vi")), atol=1e-5)
    # Ties kept; only the new tokens' embedding rows moved (trainable_token_indices, not the whole matrix).
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    before = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).model.embed_tokens.weight
    after = merged.model.embed_tokens.weight
    changed = (before - after).abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == res.new_token_ids


def _plan(seed: int) -> list[MergeConfig]:
    return [
        MergeConfig.model_validate(
            {
                "name": "instruct",
                "method": "dare_ties",
                "base": "checkpoint/base",
                "seed": seed,
                "models": [
                    {"model": "adapter/vi", "density": 0.5, "weight": 0.6},
                    {"model": "checkpoint/other", "density": 0.5, "weight": 0.4},
                ],
            }
        ),
        MergeConfig.model_validate(
            {
                "name": "final",
                "method": "della_linear",
                "base": "checkpoint/base",
                "seed": seed,
                "lambda": 1.0,
                "models": [
                    {"model": "merged/instruct", "density": 0.6, "weight": 0.5, "epsilon": 0.1},
                    {"model": "adapter/vi", "density": 0.6, "weight": 0.3, "epsilon": 0.1},
                    {"model": "checkpoint/base", "density": 0.8, "weight": 0.2, "epsilon": 0.1},
                ],
            }
        ),
    ]


def _run_plan(d: Path, seed: int, out: str) -> Path:
    from lm_platform.finetune.merge import run_merge

    for m in _plan(seed):
        run_merge(m, d, d / "merged" / m.name)
    shutil.copytree(d / "merged" / "final", d / out)
    return d / out


def test_two_stage_merge_on_extended_vocabulary(models):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    d, base, _ = models
    first = _run_plan(d, 7, "run1")
    second = _run_plan(d, 7, "run2")
    third = _run_plan(d, 8, "run3")
    a, b, c = (load_file(p / "model.safetensors") for p in (first, second, third))
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed: DARE/DELLA drops repeat
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed: other drops
    tok, base_tok = AutoTokenizer.from_pretrained(first), AutoTokenizer.from_pretrained(base)
    assert tok.get_vocab() == base_tok.get_vocab()
    assert [tok.convert_tokens_to_ids(t) for t in NEW_TOKENS] == list(range(1024, 1024 + len(NEW_TOKENS)))
    assert (first / "mergekit_config.yml").read_text().count("della_linear") == 1
    out = _logits(first)
    assert out.shape[-1] == len(tok)
    for src in (base, d / "adapter" / "vi", d / "checkpoint" / "other", d / "merged" / "instruct"):
        assert not torch.allclose(out, _logits(src), atol=1e-4), src


def test_missing_model_path_fails_without_download(models, monkeypatch, tmp_path):
    import huggingface_hub

    from lm_platform.finetune.merge import ModelPathError, run_merge

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    d, _, _ = models
    m = MergeConfig.model_validate(
        {
            "name": "x",
            "method": "dare_ties",
            "base": "checkpoint/base",
            "models": [{"model": "/nonexistent/model", "density": 0.5, "weight": 1.0}],
        }
    )
    with pytest.raises(ModelPathError, match="/nonexistent/model.*nothing is downloaded"):
        run_merge(m, d, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_packed_rows_keep_each_tokens_mask():
    import numpy as np

    from lm_platform.finetune.chat import Example

    exs = [Example(np.arange(10, 10 + n), np.array([i % 2 for i in range(n)])) for n in (5, 7, 9)]
    rows = list(batches(exs, 8, 2, 0, True, np.random.default_rng(3)))
    ids = np.concatenate([b["input_ids"][b["attention_mask"] == 1] for b in rows])
    labels = np.concatenate([b["labels"][b["attention_mask"] == 1] for b in rows])
    assert all(b["input_ids"].shape[1] <= 8 for b in rows) and len(ids) == 21
    # Every token keeps its own label: the id where the mask was 1, -100 elsewhere.
    want = {(int(t), int(m)) for e in exs for t, m in zip(e.ids, e.mask, strict=True)}
    assert {(int(t), int(lab != -100)) for t, lab in zip(ids, labels, strict=True)} == want
    assert all(lab in (-100, t) for t, lab in zip(ids, labels, strict=True))
