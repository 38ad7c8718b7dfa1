"""EEVE vocabulary extension: add new-language tokens to a base BPE tokenizer by continued BPE.

The training text is split into words by the base's own normaliser and pre-tokenizer and each word is
segmented by the base's own BPE model. New merges are then learnt greedily on top of that segmentation,
the most frequent adjacent pair of current tokens first (ties broken by the token's text), until the
budget `vocab_size - base vocab` is filled exactly. A candidate is valid when the token it makes
contains at least one whole character of the language's set V (Vietnamese: the letters outside ASCII)
and no partial UTF-8 character, and it occurs at least `min_frequency` times.

Why the new merges can rank after every base merge: byte-level BPE applies, inside one word, the
lowest-ranked applicable merge first until none applies. No base merge involves a new token, so on any
word the base merges run to completion first (giving exactly the base segmentation the new merges were
learnt on) and the new merges then fire in the order they were learnt: continued BPE, exactly.

Whole words. When the base has split one character over three tokens (` ở` is `Ġá`+`»`+`Ł`: the base
glued the space to the character's first byte), no pair of them makes a valid token, so no chain of
valid pair merges reaches ` ở`. If the base encodes every vocabulary entry as itself (checked: true of
SmolLM2), the extended tokenizer sets BPE's `ignore_merges`, which looks a whole pre-tokenized word up in
the vocabulary before merging; a frequent word no valid pair can shorten then becomes a candidate
token of its own, ranked with the pairs by its frequency. Base words map to themselves either way.

The invariant, by construction: every new token (and every new merge's result) contains a whole
character of V, so it can only form inside a word that contains that character; a text with no
character of V encodes exactly as before. `tokenization.probe.check_invariant` verifies it on a
multilingual probe set at the end of every extension.

`eeve.json` beside the HF files records, for embedding initialisation, the base, its vocabulary size
and each new token's id and base pieces (the base tokenizer's encoding of the token):
    {"base": ..., "base_vocab_size": N, "new_tokens": [{"id": N, "token": ..., "pieces": [...]}, ...]}
New ids run contiguously from `base_vocab_size`; base ids are unchanged.
"""

from __future__ import annotations

import heapq
import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from lm_platform.atomic import atomic_dir, write_json
from lm_platform.tokenization.hf_compat import make_tokenizer_compatible, write_tokenizer_files
from lm_platform.tokenization.language_chars import has_language_char
from lm_platform.tokenization.probe import check_invariant

EEVE_FILE = "eeve.json"
# Files of a local base directory that the extension rewrites or drops (the rest is copied: config,
# special tokens, chat template, license notices); slow-tokenizer files would disagree with tokenizer.json.
_REWRITTEN_FILES = {"tokenizer.json", "vocab.json", "merges.txt", EEVE_FILE}


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


def token_is_valid(raw: bytes, language: str) -> bool:
    """Whether a candidate token (the bytes it stands for) may join the vocabulary for `language`: it
    decodes as whole UTF-8 characters (no partial character at either end) and holds at least one
    whole character of V."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return has_language_char(text, language)


# --------------------------------------------------------------------------------------------------
# Continued BPE.


@dataclass
class ExtendResult:
    base_vocab_size: int
    vocab_size: int
    new_tokens: list[dict] = field(default_factory=list)
    merges: int = 0  # new merges appended after the base's
    whole_words: int = 0  # new tokens reached through ignore_merges rather than a merge
    words: int = 0  # distinct words of the training text holding a character of V
    chars: int = 0  # characters of training text read
    ignore_merges: bool = False
    invariant: dict | None = None  # tokenization.probe.check_invariant(...).summary()

    def summary(self) -> dict:
        return {
            "base_vocab_size": self.base_vocab_size,
            "vocab_size": self.vocab_size,
            "new_tokens": len(self.new_tokens),
            "merges": self.merges,
            "whole_word_tokens": self.whole_words,
            "training_words": self.words,
            "training_chars": self.chars,
            "ignore_merges": self.ignore_merges,
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


def word_counts(backend, texts: Iterable[str]) -> tuple[Counter, int]:
    """Pre-tokenized words of `texts` (in the base's alphabet) with their counts, and characters read."""
    counts: Counter = Counter()
    chars = 0
    normalizer, pre = backend.normalizer, backend.pre_tokenizer
    for text in texts:
        chars += len(text)
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        counts.update(w for w, _ in pre.pre_tokenize_str(text))
    return counts, chars


def _merge_word(symbols: list[str], a: str, b: str, ab: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(ab)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def continued_bpe(
    words: dict[str, list[str]],
    counts: Counter,
    vocab: set[str],
    budget: int,
    valid: Callable[[str], bool],
    min_frequency: int,
    whole_words: bool,
) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Greedy continued BPE over `words` (word -> its base segmentation; every word holds a character
    of V). Returns (new tokens in order, new merges in order, the new tokens that are whole words).

    A pair whose result is already a token becomes a merge without costing budget. Stops when `budget`
    new tokens exist or no candidate occurs `min_frequency` times."""
    keys = list(words)
    segs = [list(words[k]) for k in keys]
    freq = [counts[k] for k in keys]
    pair_count: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    valid_cache: dict[str, bool] = {}

    def is_valid(tok: str) -> bool:
        ok = valid_cache.get(tok)
        if ok is None:
            ok = valid_cache[tok] = valid(tok)
        return ok

    def pairs(seg: list[str]):
        return [(x, y) for x, y in zip(seg, seg[1:], strict=False) if is_valid(x + y)]

    heap: list[tuple[int, int, str, str, str]] = []  # (-count, kind, token, a, b); kind 0 pair, 1 word
    for i, seg in enumerate(segs):
        for p in pairs(seg):
            pair_count[p] += freq[i]
            where.setdefault(p, set()).add(i)
    for p, c in pair_count.items():
        heapq.heappush(heap, (-c, 0, p[0] + p[1], p[0], p[1]))
    if whole_words:
        index = {k: i for i, k in enumerate(keys)}
        for i, k in enumerate(keys):
            if len(segs[i]) > 1 and freq[i] >= min_frequency:
                heapq.heappush(heap, (-freq[i], 1, k, "", ""))

    new: list[str] = []
    merges: list[tuple[str, str]] = []
    whole: list[str] = []
    known = set(vocab)
    while heap and len(new) < budget:
        neg, kind, tok, a, b = heapq.heappop(heap)
        if -neg < min_frequency:
            break
        if kind == 1:
            i = index[tok]
            if len(segs[i]) == 1 or tok in known:
                continue
            touched = [i]
            changes = {i: [tok]}
            whole.append(tok)
        else:
            if pair_count.get((a, b), 0) != -neg:
                continue  # stale entry
            touched = sorted(where.pop((a, b), ()))
            changes = {i: _merge_word(segs[i], a, b, tok) for i in touched}
            merges.append((a, b))
        if tok not in known:
            known.add(tok)
            new.append(tok)
        updated: set[tuple[str, str]] = set()
        for i in touched:
            for p in pairs(segs[i]):
                pair_count[p] -= freq[i]
                updated.add(p)
                if p in where:
                    where[p].discard(i)
            segs[i] = changes[i]
            for p in pairs(segs[i]):
                pair_count[p] += freq[i]
                where.setdefault(p, set()).add(i)
                updated.add(p)
        for p in updated:
            c = pair_count[p]
            if c <= 0:
                pair_count.pop(p, None)
                where.pop(p, None)
            elif c >= min_frequency:
                heapq.heappush(heap, (-c, 0, p[0] + p[1], p[0], p[1]))
    return new, merges, whole


def _maps_vocab_to_itself(backend, vocab: dict[str, int], special: set[str]) -> bool:
    """Whether the base's BPE encodes every (non-special) vocabulary entry as that entry alone, so that
    looking whole words up first (ignore_merges) changes nothing for base words."""
    model = backend.model
    return all(tok in special or [t.value for t in model.tokenize(tok)] == [tok] for tok in vocab)


def extend_tokenizer(
    base: str,
    texts: Iterable[str] | Callable[[], Iterable[str]],
    out_dir: str | Path,
    language: str,
    target_vocab_size: int,
    multiple: int = 128,
    min_frequency: int = 5,
    check: bool = True,
) -> ExtendResult:
    """Extend the HF tokenizer `base` (path or hub id) to exactly `target_vocab_size` tokens of
    `language` learnt by continued BPE on `texts` (read once; a callable is called once) and write it
    to `out_dir` atomically. `target_vocab_size - base vocab` must be a positive multiple of `multiple`.

    Raises ValueError, naming how many candidates existed, when the text offers too few valid tokens
    occurring `min_frequency` times. With `check`, the invariant is verified on the probe set
    (`tokenization.probe`) and its summary returned in `result.invariant` (the caller decides; the
    asset makes it a blocking check)."""
    local = Path(base)
    if (local / "tokenizer.json").is_file():  # a directory: read it without importing transformers
        base_tok = None
        backend = Tokenizer.from_file(str(local / "tokenizer.json"))
        base_json = json.loads((local / "tokenizer.json").read_text(encoding="utf-8"))
    else:  # a hub id (or a directory with only slow-tokenizer files): transformers converts it
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
    added = {t["content"]: t["id"] for t in base_json.get("added_tokens", [])}
    base_vocab_size = max([*vocab.values(), *added.values()]) + 1
    if base_tok is not None:
        base_vocab_size = max(base_vocab_size, len(base_tok))
    budget = target_vocab_size - base_vocab_size
    if budget < multiple or budget % multiple:
        raise ValueError(
            f"tokenizer.vocab_size: {target_vocab_size} means {budget} new tokens over the base's "
            f"{base_vocab_size}; it must be a positive multiple of tokenizer.extend_multiple ({multiple}), "
            f"e.g. vocab_size {base_vocab_size + max(1, budget // multiple) * multiple}"
        )

    counts, chars = word_counts(backend, texts() if callable(texts) else texts)
    ignore_merges = bool(base_json["model"].get("ignore_merges")) or _maps_vocab_to_itself(
        backend, vocab, set(added)
    )

    def valid(tok: str) -> bool:
        return token_is_valid(token_bytes(tok, byte_level), language)

    segment = backend.model.tokenize
    words = {w: [t.value for t in segment(w)] for w in counts if valid_word(w, byte_level, language)}
    new, merges, whole = continued_bpe(
        words, counts, set(vocab) | set(added), budget, valid, min_frequency, ignore_merges
    )
    if len(new) < budget:
        raise ValueError(
            f"tokenizer: the training text offers only {len(new)} valid new {language} tokens occurring at "
            f"least tokenizer.extend_min_frequency ({min_frequency}) times, fewer than the {budget} that "
            f"tokenizer.vocab_size ({target_vocab_size}) asks for ({len(words)} distinct {language} words "
            f"in {chars:,} characters); give more {language} text (tokenizer.sample) or lower vocab_size"
        )

    data = base_json  # not needed unchanged any more
    model = data["model"]
    string_merges = bool(model["merges"]) and isinstance(model["merges"][0], str)
    for i, tok in enumerate(new):
        model["vocab"][tok] = base_vocab_size + i
    model["merges"] = list(model["merges"]) + [f"{a} {b}" if string_merges else [a, b] for a, b in merges]
    model["ignore_merges"] = ignore_merges
    Tokenizer.from_str(json.dumps(data))  # fails here, not at load time, if the result is malformed

    result = ExtendResult(
        base_vocab_size=base_vocab_size,
        vocab_size=base_vocab_size + len(new),
        merges=len(merges),
        whole_words=len(whole),
        words=len(words),
        chars=chars,
        ignore_merges=ignore_merges,
    )
    for i, tok in enumerate(new):
        pieces = [vocab[t.value] for t in segment(tok)]
        result.new_tokens.append({"id": base_vocab_size + i, "token": tok, "pieces": pieces})

    with atomic_dir(out_dir) as tmp:
        if base_tok is None:
            for f in local.iterdir():
                if f.is_file() and f.name not in _REWRITTEN_FILES:
                    shutil.copy(f, tmp / f.name)
            (tmp / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
            make_tokenizer_compatible(tmp)
        else:
            write_tokenizer_files(base_tok, data, tmp)
        write_json(
            tmp / EEVE_FILE,
            {"base": base, "base_vocab_size": base_vocab_size, "new_tokens": result.new_tokens},
        )
        if check:
            result.invariant = check_invariant(
                backend, Tokenizer.from_file(str(tmp / "tokenizer.json")), language
            ).summary()
    return result


def valid_word(word: str, byte_level: bool, language: str) -> bool:
    """Whether a pre-tokenized word (in the base's alphabet) holds a character of V."""
    raw = token_bytes(word, byte_level)
    return has_language_char(raw.decode("utf-8", errors="ignore"), language)


def readable(token: str, byte_level: bool = True) -> str:
    """A vocabulary entry as text (partial characters shown as U+FFFD), for reports."""
    return token_bytes(token, byte_level).decode("utf-8", errors="replace")
