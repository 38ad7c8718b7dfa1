"""Fertility: what a language costs in tokens (tokens per word, characters per token)."""

from __future__ import annotations

from collections.abc import Iterable

# Languages written without spaces between words have no whitespace word count.
NO_SPACE_LANGS = frozenset({"ja", "zh", "th"})


def fertility(tokenizer, docs: Iterable[tuple[str, str]]) -> dict[str, dict[str, float | int | None]]:
    """Per language: docs, chars, words, tokens, tokens_per_word, chars_per_token over (lang, text)."""
    stats: dict[str, dict[str, int]] = {}
    for lang, text in docs:
        s = stats.setdefault(lang, {"docs": 0, "chars": 0, "words": 0, "tokens": 0})
        s["docs"] += 1
        s["chars"] += len(text)
        s["words"] += len(text.split())
        s["tokens"] += len(tokenizer.encode(text, add_special_tokens=False))
    out: dict[str, dict[str, float | int | None]] = {}
    for lang, s in sorted(stats.items()):
        spaced = lang not in NO_SPACE_LANGS
        out[lang] = {
            "docs": s["docs"],
            "chars": s["chars"],
            "tokens": s["tokens"],
            "tokens_per_word": round(s["tokens"] / s["words"], 4) if spaced and s["words"] else None,
            "chars_per_token": round(s["chars"] / s["tokens"], 4) if s["tokens"] else None,
        }
    return out
