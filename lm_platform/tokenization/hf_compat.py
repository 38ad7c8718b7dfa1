"""HF files that transformers 4.57.x and 5.x both read the same way.

transformers 5 writes tokenizer and model configs that 4.x misreads or refuses:
- `tokenizer_config.json` lists extra special tokens as `extra_special_tokens: [...]` (4.x wants a dict
  of named tokens and `additional_special_tokens`), names the class `TokenizersBackend` (unknown to 4.x),
  and adds loading bookkeeping (`backend`, `is_local`, ...); no `special_tokens_map.json` is written.
- `config.json` carries RoPE as `rope_parameters: {rope_theta, rope_type, ...}`; 4.x reads only
  `rope_theta` / `rope_scaling` and silently falls back to 10,000.

`make_tokenizer_compatible(dir)` and `write_compatible_config(dir)` rewrite a saved directory into a
form both read (both RoPE spellings; dtype under both names; special tokens in both places). A test loads
the results under a transformers 4.57 install (`make install` builds `.venv-tf4`).
"""

from __future__ import annotations

import json
from pathlib import Path

from lm_platform.atomic import write_json

# Keys transformers 5 adds to tokenizer_config.json that describe how it was loaded, not the tokenizer.
_LOAD_KEYS = ("backend", "is_local", "local_files_only", "_commit_hash", "name_or_path")
_SPECIAL = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it as JSON ({exc})") from exc


def make_tokenizer_compatible(directory: str | Path) -> dict:
    """Rewrite `directory`'s tokenizer_config.json (and write special_tokens_map.json) so transformers
    4.57 and 5.x load the same tokenizer: vocab_size and added tokens from tokenizer.json, extra special
    tokens as `additional_special_tokens`, a class name 4.x knows. Returns the new config."""
    directory = Path(directory)
    cfg = _read(directory / "tokenizer_config.json")
    tok = _read(directory / "tokenizer.json")
    for key in _LOAD_KEYS:
        cfg.pop(key, None)
    extra = cfg.get("extra_special_tokens")
    if isinstance(extra, list):
        merged = list(cfg.get("additional_special_tokens") or [])
        merged += [t for t in extra if t not in merged]
        cfg["additional_special_tokens"] = merged
        cfg["extra_special_tokens"] = {}
    # tokenizer.json is the whole truth: a model-specific class (GPT2Tokenizer, LlamaTokenizer) makes
    # transformers 5 rebuild the model from vocab and merges and drop settings such as ignore_merges.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    added = sorted(tok.get("added_tokens", []), key=lambda t: t["id"])
    cfg["added_tokens_decoder"] = {
        str(t["id"]): {
            k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        }
        for t in added
    }
    ids = [*tok["model"]["vocab"].values()] if isinstance(tok["model"].get("vocab"), dict) else []
    ids += [t["id"] for t in added]
    if isinstance(tok["model"].get("vocab"), list):  # Unigram: a list of [piece, score]
        ids.append(len(tok["model"]["vocab"]) - 1)
    cfg["vocab_size"] = max(ids) + 1 if ids else 0
    write_json(directory / "tokenizer_config.json", cfg)
    special = {k: cfg[k] for k in _SPECIAL if isinstance(cfg.get(k), str | dict)}
    if cfg.get("additional_special_tokens"):
        special["additional_special_tokens"] = cfg["additional_special_tokens"]
    write_json(directory / "special_tokens_map.json", special)
    return cfg


def write_tokenizer_files(hf_tokenizer, tokenizer_json: dict, directory: str | Path) -> None:
    """Save `hf_tokenizer` (a transformers tokenizer: special tokens, chat template, settings) with
    `tokenizer_json` as its tokenizer.json, in the form both transformers 4.57 and 5.x read."""
    directory = Path(directory)
    hf_tokenizer.save_pretrained(str(directory))
    (directory / "tokenizer.json").write_text(
        json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8"
    )
    for stale in ("vocab.json", "merges.txt"):  # slow-tokenizer files would disagree with tokenizer.json
        (directory / stale).unlink(missing_ok=True)
    make_tokenizer_compatible(directory)


def write_compatible_config(directory: str | Path) -> dict:
    """Rewrite `directory/config.json` (a model config saved by transformers 5) so transformers 4.57
    reads the same model: `rope_theta` (and `rope_scaling` for a non-default RoPE) beside
    `rope_parameters`, `torch_dtype` beside `dtype`. Returns the new config."""
    path = Path(directory) / "config.json"
    cfg = _read(path)
    _compat_rope(cfg)
    for sub in ("text_config",):
        if isinstance(cfg.get(sub), dict):
            _compat_rope(cfg[sub])
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    write_json(path, cfg)
    return cfg


def _compat_rope(cfg: dict) -> None:
    rope = cfg.get("rope_parameters")
    if not isinstance(rope, dict):
        return
    if "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    kind = rope.get("rope_type", "default")
    if kind != "default" and not cfg.get("rope_scaling"):
        cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}


def make_model_dir_compatible(directory: str | Path) -> None:
    """Rewrite a model directory saved by transformers 5 (config.json, and the tokenizer files when it has
    them) so transformers 4.57 loads the same model config and tokenizer: every model directory the
    platform writes (stage checkpoints, adapters and their merged models, merges, exports) goes
    through this or through its two parts."""
    directory = Path(directory)
    if (directory / "config.json").is_file():
        write_compatible_config(directory)
    if (directory / "tokenizer.json").is_file() and (directory / "tokenizer_config.json").is_file():
        make_tokenizer_compatible(directory)


# The class names `make_tokenizer_compatible` writes: tokenizer.json is the whole tokenizer.
_GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def load_tokenizer(path: str | Path):
    """`AutoTokenizer.from_pretrained(path)`, the same tokenizer, without importing torch where it can.

    In transformers 5 `AutoTokenizer` imports the model-config machinery and with it torch (seconds of
    start-up in every process that only tokenizes: the tokenizer and dataset assets, their benchmarks).
    A local directory whose `tokenizer_config.json` names the generic class (as every tokenizer this
    project writes does), with no model `config.json` or custom code beside it, is the tokenizer that
    `AutoTokenizer` resolves to that class, so it is loaded with that class directly (a test compares
    the two); anything else (a hub id, a model-specific class such as SmolLM2's `GPT2Tokenizer`) goes
    through `AutoTokenizer`."""
    directory = Path(path)
    config = directory / "tokenizer_config.json"
    if (
        (directory / "tokenizer.json").is_file()
        and config.is_file()
        and not (directory / "config.json").exists()
    ):
        cfg = _read(config)
        if cfg.get("tokenizer_class") in _GENERIC_CLASSES and "auto_map" not in cfg:
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(directory))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
