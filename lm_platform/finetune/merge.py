"""Merges through mergekit from the recipe's merge plan. Inputs are local model directories only (a path
that does not exist fails here, before mergekit could take it for a hub id); the merge keeps the given
tokenizer (mergekit's `tokenizer` section), so an extended vocabulary survives with its ids; the YAML
handed to mergekit is stored with the merged model.

Without a `tokenizer` in the recipe the merge keeps the tokenizer of the input whose vocabulary holds
every other input's tokens at the same ids (the base's when nothing was added; an adapter's when its
fine-tuning added the chat tokens a base lacked), so ChatML tokens survive the merge and the export
renders its chat template; inputs whose vocabularies disagree fail, asking for `tokenizer`.
The directory is written in the form transformers 4.57 and 5.x both load."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.tokenization.hf_compat import load_tokenizer, make_model_dir_compatible

CONFIG_FILE = "mergekit_config.yml"  # the YAML mergekit ran, stored with the model
RESULT_FILE = "merge.json"
CARRIED = ("eeve.json", "chat_template.jinja")  # files of the tokenizer's model the merge keeps too


class ModelPathError(FileNotFoundError):
    """A merge input that is not an existing local model directory."""


def resolve_model(ref: str, base: Path) -> Path:
    """The directory of a model reference (`checkpoint/<stage>`, `adapter/<set>`, `merged/<name>` under
    the recipe's storage `base`, or an absolute path); it must hold an HF model (config.json)."""
    path = Path(ref) if ref.startswith("/") else base / ref
    if not (path / "config.json").is_file():
        raise ModelPathError(
            f"model '{ref}': {path} is not a local model directory (no config.json); only local paths "
            "are merged, nothing is downloaded"
        )
    return path


def mergekit_config(merge: Any, base: Path) -> dict[str, Any]:
    """The mergekit configuration of one merge of the recipe (absolute local paths throughout)."""
    models = []
    for m in merge.models:
        params = {k: getattr(m, k) for k in ("weight", "density", "epsilon") if getattr(m, k) is not None}
        models.append({"model": str(resolve_model(m.model, base)), "parameters": params})
    params: dict[str, Any] = {"normalize": merge.normalize}
    if merge.lambda_ is not None:
        params["lambda"] = merge.lambda_
    tokenizer = (
        resolve_model(merge.tokenizer, base)
        if merge.tokenizer
        else tokenizer_source(merge, [resolve_model(merge.base, base), *(Path(m["model"]) for m in models)])
    )
    return {
        "merge_method": merge.method,
        "base_model": str(resolve_model(merge.base, base)),
        "models": models,
        "parameters": params,
        "dtype": merge.dtype,
        "tokenizer": {"source": str(tokenizer)},
    }


def tokenizer_source(merge: Any, paths: list[Path]) -> Path:
    """The input (base first) whose vocabulary contains every other input's tokens with the same ids."""

    vocabs = [load_tokenizer(p).get_vocab() for p in paths]
    for path, vocab in sorted(zip(paths, vocabs, strict=True), key=lambda pv: -len(pv[1])):
        if all(vocab.get(t) == i for other in vocabs for t, i in other.items()):
            return path
    raise ValueError(
        f"merges.{merge.name}: the inputs' tokenizers disagree (no input's vocabulary holds every other "
        f"input's tokens at the same ids: {', '.join(str(p) for p in paths)}); set merges.{merge.name}"
        ".tokenizer to the model whose tokenizer the merge keeps"
    )


@dataclass(frozen=True)
class MergeResult:
    method: str
    base_model: str
    inputs: list
    seed: int
    dtype: str
    vocab_size: int
    tokenizer_source: str
    config_yaml: str
    seconds: float


def run_merge(merge: Any, base: Path, out_dir: str | Path) -> MergeResult:
    """Run one merge with mergekit into `out_dir` (atomically), seeded so DARE/DELLA drops repeat."""
    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions
    from mergekit.merge import run_merge as mk_run_merge

    t0 = time.time()
    cfg = mergekit_config(merge, base)
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every path was checked above
    with atomic_dir(out_dir) as tmp:
        torch.manual_seed(merge.seed)
        mk_run_merge(
            MergeConfiguration.model_validate(cfg),
            str(tmp),
            MergeOptions(random_seed=merge.seed, quiet=True, copy_tokenizer=True, write_model_card=False),
        )
        (tmp / CONFIG_FILE).write_text(text, encoding="utf-8")
        source = Path(cfg["tokenizer"]["source"])
        for name in CARRIED:
            if (source / name).exists() and not (tmp / name).exists():
                shutil.copy2(source / name, tmp / name)
        make_model_dir_compatible(tmp)

        vocab = json.loads((tmp / "config.json").read_text())["vocab_size"]
        result = MergeResult(
            method=merge.method,
            base_model=merge.base,
            inputs=[m.model_dump(by_alias=True) for m in merge.models],
            seed=merge.seed,
            dtype=merge.dtype,
            vocab_size=vocab,
            tokenizer_source=merge.tokenizer or _ref_of(source, cfg, merge),
            config_yaml=text,
            seconds=round(time.time() - t0, 2),
        )
        write_json(tmp / RESULT_FILE, result.__dict__)
    return result


def _ref_of(source: Path, cfg: dict[str, Any], merge: Any) -> str:
    """The recipe's reference of the input whose tokenizer the merge kept."""
    if str(source) == cfg["base_model"]:
        return merge.base
    for m, entry in zip(merge.models, cfg["models"], strict=True):
        if str(source) == entry["model"]:
            return m.model
    return str(source)
