"""EEVE vocabulary extension: add new-language tokens to a base BPE tokenizer as real BPE merges.

A tokenizer is trained on the new language with the base's own normaliser and pre-tokenizer, so its
pieces live in the base's alphabet (GPT-2 byte-level characters for SmolLM2). Its merges are walked in
training order; a merge whose result is absent from the base, made of pieces already in the vocabulary,
frequent enough and valid for the language (see `token_is_valid`) becomes a new token, appended after
the base merges. Because a new token always contains a character of the new language, the base's merges
run first and text without such characters is encoded exactly as before. Tokens the extended tokenizer
then hardly forms on the sample are dropped (one multiple more than the budget is gathered, so the drop
seldom leaves the target short), and the count is capped at the budget and rounded down to the recipe's
multiple.

`eeve.json` beside the HF files records, for embedding initialisation, the base, its vocabulary size
and each new token's id and base pieces (the base tokenizer's encoding of the token):
    {"base": ..., "base_vocab_size": N, "new_tokens": [{"id": N, "token": ..., "pieces": [...]}, ...]}
New ids run contiguously from `base_vocab_size`; base ids are unchanged.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lm_platform.atomic import atomic_dir, write_json

EEVE_FILE = "eeve.json"
TRAIN_BATCH = 1000


# --------------------------------------------------------------------------------------------------
# Token alphabets: byte-level (GPT-2) or SentencePiece-style metaspace.


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted (character -> byte)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def token_bytes(token: str, byte_level: bool) -> bytes:
    """The bytes of text a vocabulary entry stands for."""
    if byte_level:
        table = _byte_level_decoder()
        return bytes(table[c] for c in token)
    return token.replace("▁", " ").encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Which new tokens are acceptable.

_VI_VOWELS = "aăâeêioôơuưy"
_VI_TONES = ("", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323")
VI_LETTERS = frozenset(
    {unicodedata.normalize("NFC", v + t) for v in _VI_VOWELS for t in _VI_TONES}
    | set("bcdđfghjklmnpqrstvwxz")
    | {c.upper() for v in _VI_VOWELS for t in _VI_TONES for c in unicodedata.normalize("NFC", v + t)}
    | set("BCDĐFGHJKLMNPQRSTVWXZ")
)


def _split_partial(raw: bytes) -> tuple[str, bytes] | None:
    """Decode `raw` as whole characters plus an optional incomplete trailing character (its bytes).
    None when the bytes start mid-character or are not UTF-8."""
    for cut in range(len(raw), max(len(raw) - 4, -1), -1):
        try:
            text = raw[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return text, raw[cut:]
    return None


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    word = name.split(" ")[0]
    return "JAPANESE" if word in {"HIRAGANA", "KATAKANA", "CJK"} else word


def _valid_vi(text: str, tail: bytes) -> bool:
    """A Vietnamese syllable or part of one: Vietnamese letters, then perhaps the first bytes of one."""
    if tail and not any(
        letter.encode("utf-8").startswith(tail) for letter in VI_LETTERS if ord(letter) > 127
    ):
        return False
    return all(ch in VI_LETTERS for ch in text)


def _valid_generic(text: str, tail: bytes) -> bool:
    """Letters (and combining marks) of one script only."""
    if not all(unicodedata.category(ch)[0] in "LM" for ch in text):
        return False
    return len({_script(ch) for ch in text if unicodedata.category(ch)[0] == "L"}) <= 1


LANGUAGE_RULES: dict[str, Callable[[str, bytes], bool]] = {"vi": _valid_vi}


def token_is_valid(raw: bytes, language: str) -> bool:
    """Whether a candidate token (the bytes it stands for) may join the vocabulary for `language`:
    no symbols, digits or mixed scripts, at least one non-ASCII byte (so text without the language's
    characters never forms it), and the language's own rule (Vietnamese: a syllable or part of one).
    One leading space (a word-initial token) is allowed."""
    if len(raw) < 2:  # a lone byte is already in every byte-level base
        return False
    if raw.startswith(b" "):
        raw = raw[1:]
    if raw.isascii():
        return False
    parts = _split_partial(raw)
    if parts is None:
        return False
    text, tail = parts
    return LANGUAGE_RULES.get(language, _valid_generic)(text, tail)


# --------------------------------------------------------------------------------------------------
# Extension.


@dataclass
class ExtendResult:
    base_vocab_size: int
    vocab_size: int
    new_tokens: list[dict] = field(default_factory=list)
    candidates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dropped_unused: int = 0
    dropped_rounding: int = 0

    def summary(self) -> dict:
        return {
            "base_vocab_size": self.base_vocab_size,
            "vocab_size": self.vocab_size,
            "new_tokens": len(self.new_tokens),
            "candidates": self.candidates,
            "rejected": self.rejected,
            "dropped_unused": self.dropped_unused,
            "dropped_rounding": self.dropped_rounding,
        }


def _is_byte_level(tok_json: dict) -> bool:
    return '"ByteLevel"' in json.dumps(tok_json.get("pre_tokenizer")) or '"ByteLevel"' in json.dumps(
        tok_json.get("decoder")
    )


def _merge_pair(merge) -> tuple[str, str]:
    if isinstance(merge, str):
        a, b = merge.split(" ", 1)
        return a, b
    return merge[0], merge[1]


def _formation_counts(backend, texts: Iterable[str], merges: list[tuple[str, str]]) -> Counter:
    """How often each merge result is formed while encoding `texts`: its count in the output plus the
    formations of every token built from it."""
    counts: Counter = Counter()
    batch: list[str] = []

    def flush():
        for enc in backend.encode_batch(batch, add_special_tokens=False):
            counts.update(enc.tokens)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) == TRAIN_BATCH:
            flush()
    if batch:
        flush()
    formed = Counter()
    for a, b in reversed(merges):
        made = counts[a + b] + formed[a + b]
        formed[a + b] = made
        formed[a] += made
        formed[b] += made
    for a, b in merges:
        counts[a + b] = formed[a + b]
    return counts


def _with_merges(base_json: dict, start_id: int, merges: list[tuple[str, str]], string_merges: bool) -> dict:
    data = json.loads(json.dumps(base_json))
    model = data["model"]
    for i, (a, b) in enumerate(merges):
        model["vocab"][a + b] = start_id + i
    model["merges"] = list(model["merges"]) + [f"{a} {b}" if string_merges else [a, b] for a, b in merges]
    return data


def extend_tokenizer(
    base: str,
    texts: Callable[[], Iterable[str]],
    out_dir: str | Path,
    language: str,
    target_vocab_size: int,
    multiple: int = 128,
    min_frequency: int = 5,
) -> ExtendResult:
    """Extend the HF tokenizer `base` (path or hub id) with tokens of `language` learnt from `texts()`
    (called once per pass; each call yields the sample afresh) and write it to `out_dir` atomically.

    At most `target_vocab_size - base vocab` tokens are added, rounded down to a multiple of `multiple`.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    base_tok = AutoTokenizer.from_pretrained(base)
    backend = base_tok.backend_tokenizer
    base_json = json.loads(backend.to_str())
    if base_json["model"]["type"] != "BPE":
        raise ValueError(
            f"tokenizer.base: '{base}' is a {base_json['model']['type']} tokenizer; EEVE extension needs BPE"
        )
    byte_level = _is_byte_level(base_json)
    vocab: dict[str, int] = base_json["model"]["vocab"]
    ids = [*vocab.values(), *(t["id"] for t in base_json.get("added_tokens", []))]
    base_vocab_size = max(len(base_tok), max(ids) + 1)
    budget = target_vocab_size - base_vocab_size
    if budget < multiple:
        raise ValueError(
            f"tokenizer.vocab_size: {target_vocab_size} leaves room for {budget} new tokens over the base's "
            f"{base_vocab_size}; need at least tokenizer.extend_multiple ({multiple})"
        )
    string_merges = bool(base_json["model"]["merges"]) and isinstance(base_json["model"]["merges"][0], str)

    # 1. A tokenizer of the new language in the base's alphabet.
    learner = Tokenizer(models.BPE())
    learner.normalizer = backend.normalizer
    learner.pre_tokenizer = backend.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=256 + 3 * budget,
        min_frequency=min_frequency,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [],
    )
    learner.train_from_iterator(texts(), trainer=trainer)
    learnt = [_merge_pair(m) for m in json.loads(learner.to_str())["model"]["merges"]]
    learnt_counts = _formation_counts(learner, texts(), learnt)

    # 2. Candidates in training order: new, buildable from known pieces, frequent, valid. A few more than
    #    the budget, so that the budget is still met after step 3 drops the seldom-formed ones.
    wanted = budget + multiple
    known = set(vocab)
    chosen: list[tuple[str, str]] = []
    rejected: Counter = Counter()
    for a, b in learnt:
        tok = a + b
        if tok in known:
            continue
        if a not in known or b not in known:
            rejected["parts_not_in_vocab"] += 1
        elif learnt_counts[tok] < min_frequency:
            rejected["rare"] += 1
        elif not token_is_valid(token_bytes(tok, byte_level), language):
            rejected["invalid_for_language"] += 1
        else:
            chosen.append((a, b))
            known.add(tok)
            if len(chosen) == wanted:
                break

    # 3. Drop tokens the extended tokenizer seldom forms on the sample (their makers are formed at
    #    least as often, so what stays is closed under its parts); round down to the multiple.
    trial = Tokenizer.from_str(json.dumps(_with_merges(base_json, base_vocab_size, chosen, string_merges)))
    used = _formation_counts(trial, texts(), chosen)
    kept = [(a, b) for a, b in chosen if used[a + b] >= min_frequency]
    n = min(len(kept), budget) // multiple * multiple
    if n == 0:
        raise ValueError(
            f"tokenizer: only {len(kept)} new {language} tokens pass selection, fewer than "
            f"tokenizer.extend_multiple ({multiple}); give more {language} text or lower the multiple"
        )
    final = kept[:n]
    data = _with_merges(base_json, base_vocab_size, final, string_merges)

    result = ExtendResult(
        base_vocab_size=base_vocab_size,
        vocab_size=base_vocab_size + n,
        candidates=len(chosen),
        rejected=dict(rejected),
        dropped_unused=len(chosen) - len(kept),
        dropped_rounding=len(kept) - n,
    )
    for i, (a, b) in enumerate(final):
        tok = a + b
        pieces = [t.id for t in backend.model.tokenize(tok)]
        result.new_tokens.append({"id": base_vocab_size + i, "token": tok, "pieces": pieces})

    with atomic_dir(out_dir) as tmp:
        base_tok.save_pretrained(str(tmp))
        (tmp / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        if (tmp / "vocab.json").exists():
            (tmp / "vocab.json").write_text(json.dumps(data["model"]["vocab"], ensure_ascii=False), "utf-8")
        if (tmp / "merges.txt").exists():
            lines = ["#version: 0.2", *(" ".join(_merge_pair(m)) for m in data["model"]["merges"])]
            (tmp / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_json(
            tmp / EEVE_FILE,
            {"base": base, "base_vocab_size": base_vocab_size, "new_tokens": result.new_tokens},
        )
    return result


def readable(token: str, byte_level: bool = True) -> str:
    """A vocabulary entry as text (partial characters shown as U+FFFD), for reports."""
    return token_bytes(token, byte_level).decode("utf-8", errors="replace")
