"""Fine-tuning at the edges: an untied model's new tokens train their input and output rows; a merge
whose base lacks the chat tokens keeps them and its export renders the chat template; every model
directory the platform writes loads alike under transformers 4.57 and 5.x (a non-default rope_theta)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from lm_platform.finetune.chat import IM_END, IM_START
from lm_platform.finetune.lora import train_adapter
from lm_platform.recipe.finetune import LoraConfig, MergeConfig, SFTConfig
from lm_platform_tests.finetune_fixtures import CHAT, tiny_model, write_jsonl

REPO = Path(__file__).resolve().parents[1]
TF4_PYTHON = REPO / ".venv-tf4" / "bin" / "python"
ROPE_THETA = 100_000.0  # not the default 10,000, which transformers 4.x falls back to silently
RMS_EPS = 1e-5
HEAD_DIM = 16  # not hidden / heads (8)
SFT = SFTConfig(lr=2e-2, max_steps=4, micro_batch_size=4, seed=1)


def _rows_changed(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    n = min(before.shape[0], after.shape[0])
    return ((before[:n] - after[:n]).abs().sum(-1) > 0).nonzero().flatten().tolist()


def test_an_untied_model_trains_exactly_the_new_tokens_input_and_output_rows(tmp_path):
    """The bundled tokenizer has the ChatML tokens (ids 1, 2) that plain pretraining never used, plus six
    EEVE tokens: all eight are new, and with untied embeddings both their embedding and head rows train."""
    from safetensors.torch import load_file

    base = tiny_model(tmp_path / "base", tied=False)
    res = train_adapter(
        base,
        write_jsonl(tmp_path / "chat.jsonl", CHAT),
        "chat",
        tmp_path / "adapter",
        LoraConfig(rank=4),
        SFT,
    )
    assert res.new_token_ids == [1, 2, *range(1024, 1030)]
    before, after = (
        load_file(base / "model.safetensors"),
        load_file(tmp_path / "adapter" / "model.safetensors"),
    )
    # Input rows move where their token occurs in the data (all the chat tokens), and nowhere else;
    # every new output row moves (the softmax reaches every row of the head).
    inputs = _rows_changed(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert {1, 2} <= set(inputs) <= set(res.new_token_ids) and len(inputs) > 2
    assert _rows_changed(before["lm_head.weight"], after["lm_head.weight"]) == res.new_token_ids
    # Beside those rows only the LoRA-targeted projections moved (merged in); norms and MLP did not.
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert (
        moved - {"model.embed_tokens.weight", "lm_head.weight"}
        == {k for k in moved if any(p in k for p in ("q_proj", "k_proj", "v_proj", "o_proj"))}
        != set()
    )


# --------------------------------------------------------------------------------------------------
# A base whose tokenizer lacks the chat tokens (as Llama-3.2's or a SentencePiece the `ja` recipe
# trains): the adapter adds them, the merge must keep them, every directory must load under 4.57.


@pytest.fixture(scope="module")
def chatless(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from lm_platform.finetune.export import export_model
    from lm_platform.finetune.merge import run_merge

    d = tmp_path_factory.mktemp("chatless")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    texts = [m["content"] for c in CHAT for m in c["messages"]] + ["user", "assistant", "system"]
    bpe.train_from_iterator(
        texts * 5,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    base = d / "checkpoint" / "base"
    tok.save_pretrained(str(base))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HEAD_DIM,
        max_position_embeddings=128,
        rope_theta=ROPE_THETA,
        rms_norm_eps=RMS_EPS,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(base))
    assert IM_START not in tok.get_vocab()
    res = train_adapter(
        base, write_jsonl(d / "chat.jsonl", CHAT), "chat", d / "adapter" / "vi", LoraConfig(rank=4), SFT
    )
    merge = MergeConfig.model_validate(
        {
            "name": "final",
            "method": "task_arithmetic",
            "base": "checkpoint/base",
            "models": [{"model": "adapter/vi", "weight": 1.0}],
        }
    )
    merged = run_merge(merge, d, d / "merged" / "final")
    export = export_model(d / "merged" / "final", d / "export" / "chat", "auto", "# card\n")
    return {"d": d, "base": base, "adapter": res, "merged": merged, "export": export, "n_base": len(tok)}


def test_a_merge_keeps_the_chat_tokens_its_base_lacks_and_the_export_renders_the_template(chatless):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = chatless["d"]
    assert chatless["adapter"].added_chat_tokens == [chatless["n_base"], chatless["n_base"] + 1]
    assert chatless["merged"].tokenizer_source == "adapter/vi"
    assert chatless["merged"].vocab_size == chatless["n_base"] + 2
    out = d / "export" / "chat"
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tok.convert_tokens_to_ids([IM_START, IM_END]) == chatless["adapter"].added_chat_tokens
    assert model.get_input_embeddings().num_embeddings == len(tok)
    text = tok.apply_chat_template([{"role": "user", "content": "Xin chào!"}], tokenize=False)
    assert text == f"{IM_START}user\nXin chào!{IM_END}\n"
    ids = tok.apply_chat_template([{"role": "user", "content": "Xin chào!"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids[0] == tok.convert_tokens_to_ids(IM_START)


def test_a_merge_of_disagreeing_tokenizers_asks_for_one(chatless, tmp_path):
    from lm_platform.finetune.merge import tokenizer_source

    merge = MergeConfig.model_validate(
        {"name": "m", "method": "linear", "base": "x", "models": [{"model": "y"}]}
    )
    other = tiny_model(tmp_path / "other")  # the bundled tokenizer: other tokens at the same ids
    with pytest.raises(ValueError, match=r"merges\.m\.tokenizer"):
        tokenizer_source(merge, [chatless["base"], other])


_TF4_SCRIPT = r"""
import json, sys
from transformers import AutoConfig, AutoTokenizer, __version__
assert __version__.startswith("4.57"), __version__
out = {}
texts = json.loads(sys.argv[1])
for path in json.loads(sys.stdin.read()):
    c = AutoConfig.from_pretrained(path)
    t = AutoTokenizer.from_pretrained(path)
    out[path] = {
        "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps, "head_dim": c.head_dim,
        "tie_word_embeddings": c.tie_word_embeddings, "vocab_size": c.vocab_size, "len": len(t),
        "ids": [t.encode(x, add_special_tokens=False) for x in texts],
        "chat_template": t.chat_template,  # (.venv-tf4 has no jinja2 to render it; 5.x renders it below)
    }
print(json.dumps(out))
"""


def _tf5_view(path: Path, texts: list[str]) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    c = AutoConfig.from_pretrained(path)
    t = AutoTokenizer.from_pretrained(path)
    theta = getattr(c, "rope_theta", None) or (c.rope_parameters or {}).get("rope_theta")
    return {
        "rope_theta": theta,
        "rms_norm_eps": c.rms_norm_eps,
        "head_dim": c.head_dim,
        "tie_word_embeddings": c.tie_word_embeddings,
        "vocab_size": c.vocab_size,
        "len": len(t),
        "ids": [t.encode(x, add_special_tokens=False) for x in texts],
        "chat_template": t.chat_template,
    }


def test_every_model_directory_loads_alike_under_transformers_4_57(chatless, tmp_path):
    if not TF4_PYTHON.exists():
        pytest.skip(f"{TF4_PYTHON} is absent (make tf4 builds the transformers 4.57 environment)")
    from transformers import AutoModelForCausalLM

    from lm_platform.training import checkpoint as ckpt

    d = chatless["d"]
    # A stage checkpoint as the trainer writes it (from the base and its tokenizer).
    model = AutoModelForCausalLM.from_pretrained(chatless["base"])
    opt = torch.optim.AdamW(model.parameters())
    stage = ckpt.save(tmp_path / "step_00000001", model, opt, {"step": 1}, chatless["base"])
    dirs = [
        stage,
        d / "adapter" / "vi",
        d / "adapter" / "vi" / "peft",
        d / "merged" / "final",
        d / "export" / "chat",
    ]
    texts = ["Xin chào Việt Nam!", f"{IM_START}user\nhi{IM_END}"]
    proc = subprocess.run(
        [str(TF4_PYTHON), "-c", _TF4_SCRIPT, json.dumps(texts)],
        input=json.dumps([str(p) for p in dirs if (p / "config.json").exists()]),
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(got) == 4  # every directory with a model config (the peft one holds a tokenizer only)
    for path, tf4 in got.items():
        tf5 = _tf5_view(Path(path), texts)
        assert tf4 == tf5, path
        assert (
            tf4["rope_theta"] == ROPE_THETA and tf4["head_dim"] == HEAD_DIM and tf4["rms_norm_eps"] == RMS_EPS
        )
        assert tf4["tie_word_embeddings"] is False
    for path in (d / "merged" / "final", d / "export" / "chat"):
        assert got[str(path)]["chat_template"] and got[str(path)]["len"] == chatless["n_base"] + 2
