"""Fertility: what a language costs in tokens (tokens per word, characters per token)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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


def cost(row: dict) -> float | None:
    """The number a language's fertility is judged by: tokens per word, or for languages written
    without spaces, tokens per character (the inverse of chars_per_token)."""
    if row.get("tokens_per_word") is not None:
        return row["tokens_per_word"]
    return 1 / row["chars_per_token"] if row.get("chars_per_token") else None


def compare_fertility(new, base, docs: Iterable[tuple[str, str]]) -> list[dict]:
    """One row per language: the new tokenizer's fertility next to the base's (None when there is no
    base), with `change` = relative change of tokens per word (per character where words are not
    spaced); negative is better."""
    docs = list(docs)
    after = fertility(new, docs)
    before = fertility(base, docs) if base is not None else {}
    rows = []
    for lang, a in after.items():
        b = before.get(lang, {})
        row = {
            "lang": lang,
            "docs": a["docs"],
            "chars": a["chars"],
            "base_tokens": b.get("tokens"),
            "new_tokens": a["tokens"],
            "base_tokens_per_word": b.get("tokens_per_word"),
            "new_tokens_per_word": a["tokens_per_word"],
            "base_chars_per_token": b.get("chars_per_token"),
            "new_chars_per_token": a["chars_per_token"],
            "change": None,
        }
        if b and cost(b) and cost(a) is not None:
            row["change"] = round(cost(a) / cost(b) - 1, 4)
        rows.append(row)
    return rows


def worse_than_base(rows: list[dict], languages: Iterable[str] | None = None) -> list[str]:
    """Languages (all compared ones, or `languages`) where the new tokenizer costs more than the base."""
    wanted = set(languages) if languages is not None else None
    return [
        r["lang"]
        for r in rows
        if (wanted is None or r["lang"] in wanted) and r["change"] is not None and r["change"] > 0
    ]


def cost_unit(row: dict) -> str:
    """What `cost` counts for this row: tokens per word, or per character where words are not spaced."""
    return "tokens/word" if row.get("new_tokens_per_word") is not None else "tokens/char"


def describe(row: dict) -> str:
    """One comparison row as a line of text, e.g. `vi tokens/word 4.93 -> 2.42 (-51%)`; without a base,
    just the new tokenizer's cost."""

    def value(prefix: str) -> float | None:
        return cost(
            {
                "tokens_per_word": row.get(f"{prefix}_tokens_per_word"),
                "chars_per_token": row.get(f"{prefix}_chars_per_token"),
            }
        )

    new = value("new")
    line = f"{row['lang']} {cost_unit(row)} "
    if new is None:
        return line + "n/a"
    base = value("base")
    if base is None or row.get("change") is None:
        return line + f"{new:.2f}"
    return line + f"{base:.2f} -> {new:.2f} ({row['change']:+.0%})"


def reduction_key(row: dict) -> str:
    """The metadata key under which a language's reduction (fraction of tokens saved) is reported."""
    return f"{row['lang']}_{cost_unit(row).replace('/', '_per_')}_reduction"


COLUMNS = ("lang", "docs", "chars", "new_tokens", "new_tokens_per_word", "new_chars_per_token")
BASE_COLUMNS = ("base_tokens", "base_tokens_per_word", "base_chars_per_token", "change")


@dataclass(frozen=True)
class FertilityReport:
    """The new tokenizer against its base on held-out text: one row per language, and the check that it
    needs no more tokens than the base in the target languages (`passed` is None without a base)."""

    rows: tuple[dict, ...]
    measured_on: str
    has_base: bool
    worse: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def passed(self) -> bool | None:
        return None if not self.has_base else not self.worse and not self.missing

    @property
    def problem(self) -> str | None:
        """Why the check fails, in words; None when it passes."""
        text = (f"worse than the base on {list(self.worse)}" if self.worse else "") + (
            f"no held-out text in {list(self.missing)}" if self.missing else ""
        )
        return text or None

    @property
    def columns(self) -> list[str]:
        return list(COLUMNS + (BASE_COLUMNS if self.has_base else ()))

    @property
    def reductions(self) -> dict[str, float]:
        """The gain over the base as numbers: fraction of tokens saved per word (per character where words
        are not spaced), keyed by `reduction_key`."""
        return {reduction_key(r): 0.0 - r["change"] for r in self.rows if r["change"] is not None}


def fertility_report(
    new, base, held_out: Iterable[tuple[str, str]], measured_on: str, target: list[str] | None = None
) -> FertilityReport:
    """Compare `new` with `base` (None: no comparison) on (lang, text) pairs; with a base, the target
    languages (default: all) must not get worse and must have held-out text."""
    rows = compare_fertility(new, base, held_out)
    if base is None:
        return FertilityReport(tuple(rows), measured_on, has_base=False)
    seen = {r["lang"] for r in rows}
    return FertilityReport(
        tuple(rows),
        measured_on,
        has_base=True,
        worse=tuple(worse_than_base(rows, target)),
        missing=tuple(lang for lang in target or [] if lang not in seen),
    )
