"""Small things the training tests build for themselves: a tokenizer trained on the demo texts, an
EEVE-extended copy of it (with `eeve.json` as the tokenizer asset writes it), packed datasets, tiny
Llama checkpoints and trainer jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lm_platform.atomic import write_json
from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.recipe.model_init import EEVE_TIED_RULE
from lm_platform.training.config import TrainConfig, TrainJob
from lm_platform.training.contract import TrainerLaunch
from lm_platform_tests.pack_fixtures import pack_text

TEXTS = Path(__file__).resolve().parents[1] / "lm_platform" / "demo" / "texts"
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "max_position_embeddings": 128,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}


def demo_paragraphs(langs=("vi", "en")) -> list[tuple[str, str]]:
    out = []
    for lang in langs:
        for para in (TEXTS / f"{lang}.txt").read_text(encoding="utf-8").split("\n\n"):
            if para.strip():
                out.append((lang, para.strip()))
    return out


def base_tokenizer(out_dir: Path, vocab_size: int = 400) -> Path:
    from lm_platform.recipe.schema import TokenizerConfig
    from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

    train_sentencepiece((t for _, t in demo_paragraphs()), out_dir, TokenizerConfig(vocab_size=vocab_size))
    return out_dir


def eeve_tokenizer(base_dir: Path, out_dir: Path, n_new: int = 24) -> dict[str, Any]:
    """Add the `n_new` most frequent multi-piece Vietnamese words as tokens and write `eeve.json`."""
    from collections import Counter

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    base_size = len(tok)
    words = Counter(w for lang, t in demo_paragraphs(("vi",)) for w in t.split() if w.isalpha())
    new = []
    for word, _ in words.most_common():
        pieces = tok.encode(word, add_special_tokens=False)
        if len(pieces) >= 2:
            new.append((word, pieces))
        if len(new) == n_new:
            break
    tok.add_tokens([w for w, _ in new])
    tok.save_pretrained(str(out_dir))
    spec = {
        "base": str(base_dir),
        "base_vocab_size": base_size,
        "new_tokens": [
            {"id": tok.convert_tokens_to_ids(w), "token": w, "pieces": pieces} for w, pieces in new
        ],
    }
    assert [t["id"] for t in spec["new_tokens"]] == list(range(base_size, base_size + len(new)))
    write_json(out_dir / "eeve.json", spec)
    return spec


def pack_demo(tokenizer_dir: Path, out_dir: Path, seq_len: int = 32, langs=("vi", "en")) -> dict:
    blend = out_dir.parent / f"{out_dir.name}.blend.parquet"
    with DocWriter(blend) as w:
        for i, (lang, text) in enumerate(demo_paragraphs(langs)):
            w.write(make_doc(f"{lang}-{i}", text, lang, "CC0-1.0", lang))
    return pack_text(blend, tokenizer_dir, out_dir, seq_len=seq_len, val_fraction=0.1)


def synthetic_dataset(
    out_dir: Path, vocab_size: int, rows: int = 48, seq_len: int = 16, seed: int = 0
) -> Path:
    """A packed dataset of random tokens (no padding) in the format `pack_tokens` writes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", rows), ("val", 8)):
        data = rng.integers(4, vocab_size, size=(n, seq_len + 1)).astype(np.uint16)
        np.save(out_dir / f"{split}_00000.npy", data)
        splits[split] = {
            "docs": n,
            "tokens": data.size,
            "rows": n,
            "padding": 0,
            "shards": [{"file": f"{split}_00000.npy", "rows": n}],
        }
    index = {
        "seq_len": seq_len,
        "row_len": seq_len + 1,
        "dtype": "uint16",
        "vocab_size": vocab_size,
        "bos_id": 1,
        "eos_id": 2,
        "pad_id": 3,
        "model_pad_id": 3,
        "val_fraction": 0.1,
        "tokens": sum(s["tokens"] for s in splits.values()),
        "splits": splits,
        "sources": {},
    }
    write_json(out_dir / "index.json", index)
    return out_dir


def synthetic_eeve(tokenizer_dir: Path, base_vocab: int, n_new: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    spec = {
        "base": "tiny-base",
        "base_vocab_size": base_vocab,
        "new_tokens": [
            {
                "id": base_vocab + i,
                "token": f"tok{i}",
                "pieces": [int(p) for p in rng.integers(4, base_vocab, size=int(rng.integers(1, 4)))],
            }
            for i in range(n_new)
        ],
    }
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    write_json(tokenizer_dir / "eeve.json", spec)
    return spec


def tiny_checkpoint(out_dir: Path, vocab_size: int, tied: bool = False, seed: int = 0) -> Path:
    from lm_platform.modeling.init import build_model

    model = build_model(
        {"kind": "scratch", "model": {**TINY, "tie_word_embeddings": tied}}, vocab_size, 1, 2, 3, seed
    )
    model.save_pretrained(str(out_dir))
    return out_dir


def make_job(
    tmp: Path, stage: str, dataset: Path, tokenizer: Path, init: dict[str, Any], generation=None, **train: Any
) -> dict[str, Any]:
    """A trainer job like `lm_platform.training.job.make_job` builds (a validated `TrainJob`, as JSON),
    with TrainConfig's defaults. `seq_len` is the dataset's and is ignored here."""
    tied_rule = train.pop("eeve_tied_rule", EEVE_TIED_RULE)
    train.pop("seq_len", None)
    fields = {"micro_batch_size": 4, "lr": 1e-2, "warmup_steps": 1, "log_every": 5, **train}
    return TrainJob(
        recipe="test",
        stage=stage,
        dataset_dir=str(dataset),
        tokenizer_dir=str(tokenizer),
        output_dir=str(tmp / "checkpoint" / stage),
        run_dir=str(tmp / "checkpoint" / f"{stage}.run"),
        init=init,
        model={"eeve_tied_rule": tied_rule},
        generation=generation or {"prompts": []},
        train=TrainConfig(**fields),
    ).model_dump(mode="json")


def write_job(job: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def launch_command(job_file: str | Path, nproc_per_node: int = 1, stage: str = "s") -> list[str]:
    """The command the platform runs for a trainer launch (`TrainerLaunch.command`)."""
    return TrainerLaunch(str(job_file), nproc_per_node, stage).command()
