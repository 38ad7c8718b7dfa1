"""The demo corpus: the project's own paragraphs (texts/*.txt) plus labelled noise.

    python -m lm_platform.demo.generate [--out DIR]

Writes one JSONL file per demo source, a held-out evaluation file and a small base tokenizer into the
bundled recipe's `demo_data/`. Every record carries `meta.label`: `clean`, or the kind of noise it is (exact, near and
cross-source duplicates, boilerplate, too short, wrong language, broken encoding), so tests can check
that curation and dedup remove exactly what they should. The base tokenizer (`base_tokenizer/`) is a
SmolLM2-style byte-level BPE trained on the English and Japanese paragraphs (held-out ones excepted)
and on no Vietnamese: the demo extends it with Vietnamese tokens (EEVE) as the Vietnamese recipe
extends SmolLM2, and reports how much cheaper Vietnamese becomes. Deterministic: the same seed gives the same
bytes, and a test keeps the committed files in sync with this generator.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import unicodedata
from pathlib import Path

from lm_platform.tokenization.byte_level import byte_level_bpe_files

TEXTS = Path(__file__).parent / "texts"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "recipe" / "bundled" / "demo_data"
LANGS = ("vi", "ja", "en")
HELDOUT, RESERVE = 15, 20
BASE_TOKENIZER = "base_tokenizer"  # directory under demo_data/
BASE_TOKENIZER_LANGS = ("en", "ja")  # an English-centric base that has seen some Japanese, no Vietnamese
BASE_TOKENIZER_VOCAB = 1024
NOISE_LABELS = (
    "exact_duplicate",
    "near_duplicate",
    "cross_source_duplicate",
    "boilerplate",
    "too_short",
    "wrong_language",
    "broken_encoding",
    "repetitive",
    "spam",
)

# (source, language, file name): ja_wiki and en_web are gzipped to exercise that reader.
SOURCES = (
    ("vi_news", "vi", "vi_news.jsonl"),
    ("ja_wiki", "ja", "ja_wiki.jsonl.gz"),
    ("en_books", "en", "en_books.jsonl"),
    ("en_web", "en", "en_web.jsonl.gz"),
)

BOILERPLATE = {
    "vi": [
        "Trang chủ",
        "Tin tức",
        "Liên hệ",
        "Đăng nhập",
        "Đăng ký nhận bản tin",
        "Chia sẻ bài viết",
        "Bản quyền © Báo Mẫu. Bảo lưu mọi quyền.",
        "Trang web sử dụng cookie để cải thiện trải nghiệm của bạn.",
    ],
    "ja": [
        "ホーム",
        "お知らせ",
        "お問い合わせ",
        "ログイン",
        "サイトマップ",
        "前のページへ戻る",
        "© 見本出版 無断転載を禁じます。",
        "当サイトはクッキーを使用しています。",
    ],
    "en": [
        "Home",
        "About us",
        "Contact",
        "Sign in",
        "Subscribe to our newsletter",
        "Share this page",
        "Copyright © Sample Press. All rights reserved.",
        "This site uses cookies to improve your experience.",
    ],
}


# Spam vocabulary, also the demo's flagged-word list (recipe/bundled/demo_data/flagged_words.txt).
SPAM = {
    "vi": ["cá độ", "đánh bạc", "casino", "nổ hũ", "jackpot"],
    "ja": ["オンラインカジノ", "出会い系", "アダルト", "副業で稼ぐ"],
    "en": ["casino", "jackpot", "viagra", "bet365", "xxx"],
}


def read_paragraphs(lang: str) -> list[str]:
    text = (TEXTS / f"{lang}.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def sloppy_cp1252(text: str) -> str:
    """UTF-8 bytes read as cp1252 (undefined bytes as C1 controls): classic mojibake."""
    out = []
    for b in text.encode("utf-8"):
        try:
            out.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            out.append(chr(b))
    return "".join(out)


def with_replacement_chars(text: str, rng: random.Random, rate: float = 0.03) -> str:
    """Characters lost to a lossy decode, shown as U+FFFD."""
    return "".join("\ufffd" if c.isalpha() and rng.random() < rate else c for c in text)


def near_duplicate(text: str, lang: str, rng: random.Random) -> str:
    """A copy that differs only in Unicode form, width, case, spacing or punctuation."""
    if lang == "ja":
        # Full-width text made half-width/compatibility forms; NFKC maps it back.
        variant = text.replace("。", "｡").replace("、", "､")
        return variant.replace("ー", "ｰ") + "　"
    if lang == "vi":
        variant = unicodedata.normalize("NFD", text)  # decomposed diacritics, as some sites serve them
        return "  " + variant.replace(", ", " , ").replace(". ", ".  ")
    words = text.split(" ")
    i = rng.randrange(len(words))
    words[i] = words[i].upper()
    return " ".join(words).replace(", ", " ,  ").rstrip(".") + "!"


def edited_copy(text: str, lang: str, rng: random.Random) -> str:
    """A copy with one word (two characters in Japanese) replaced: a near duplicate in content."""
    if lang == "ja":
        i = rng.randrange(10, len(text) - 10)
        return text[:i] + "新しい" + text[i + 2 :]
    words = text.split(" ")
    i = rng.choice([j for j, w in enumerate(words) if len(w) >= 3])
    replacement = rng.choice([w for w in words if w != words[i] and len(w) >= 3])
    return " ".join(words[:i] + [replacement] + words[i + 1 :])


def too_short(text: str, lang: str, rng: random.Random) -> str:
    if lang == "ja":
        return text[: rng.randint(12, 30)] + "。"
    return " ".join(text.split()[: rng.randint(3, 8)]).rstrip(",.") + "."


def boilerplate_page(lang: str, rng: random.Random) -> str:
    """A scraped navigation/footer page: long enough to pass a length filter, but no prose."""
    lines = BOILERPLATE[lang][:]
    rng.shuffle(lines)
    return "\n".join(lines + rng.choices(lines, k=rng.randint(8, 14)))


def build(seed: int = 13) -> tuple[dict[str, list[dict]], list[dict]]:
    """Records per source and the held-out evaluation records."""
    rng = random.Random(seed)
    pools: dict[str, dict[str, list[str]]] = {}
    for lang in LANGS:
        paras = read_paragraphs(lang)
        rng.shuffle(paras)
        pools[lang] = {
            "heldout": paras[:HELDOUT],
            "reserve": paras[HELDOUT : HELDOUT + RESERVE],
            "clean": paras[HELDOUT + RESERVE :],
        }
    en_clean = pools["en"]["clean"]
    cut = int(len(en_clean) * 0.56)
    clean = {
        "vi_news": pools["vi"]["clean"],
        "ja_wiki": pools["ja"]["clean"],
        "en_books": en_clean[:cut],
        "en_web": en_clean[cut:],
    }
    reserve = {lang: list(pools[lang]["reserve"]) for lang in LANGS}

    out: dict[str, list[dict]] = {}
    for source, lang, _ in SOURCES:
        docs: list[dict] = [{"text": t, "label": "clean"} for t in clean[source]]
        for _ in range(4):
            docs.append({"text": too_short(reserve[lang].pop(), lang, rng), "label": "too_short"})
        for k in range(4):
            original = reserve[lang].pop()
            broken = (
                sloppy_cp1252(original)
                if lang != "en" and k % 2 == 0
                else with_replacement_chars(original, rng)
            )
            docs.append({"text": broken, "label": "broken_encoding"})
        for other in LANGS:
            if other != lang:
                for _ in range(2):
                    docs.append({"text": reserve[other].pop(), "label": "wrong_language"})
        for _ in range(5):
            docs.append({"text": boilerplate_page(lang, rng), "label": "boilerplate"})
        rng.shuffle(docs)
        for i, doc in enumerate(docs):
            doc["id"] = f"{source}-{i:04d}"
        originals = [d for d in docs if d["label"] == "clean"]
        copies = []
        for d in rng.sample(originals, 8):
            copies.append((d, {"text": d["text"], "label": "exact_duplicate"}))
        for d in rng.sample(originals, 8):
            copies.append((d, {"text": near_duplicate(d["text"], lang, rng), "label": "near_duplicate"}))
        if source == "en_web":  # copies of the higher-priority en_books, as web scrapes of books are
            for d in rng.sample([x for x in out["en_books"] if x["meta"]["label"] == "clean"], 6):
                copies.append(
                    (None, {"text": d["text"], "label": "cross_source_duplicate", "copy_of": d["id"]})
                )
        for n, (orig, copy) in enumerate(copies):
            copy["id"] = f"{source}-d{n:03d}"
            if orig is not None:
                copy["copy_of"] = orig["id"]
            lo = docs.index(orig) + 1 if orig is not None else 0
            docs.insert(rng.randint(lo, len(docs)), copy)
        # Edited copies (one word, or two Japanese characters, changed): no exact key catches them, MinHash
        # does. Their own generator keeps the rest of the corpus as it was.
        edits = random.Random(f"{seed}:{source}:edited")
        for k, orig in enumerate(edits.sample(originals, 4)):
            copy = {
                "id": f"{source}-e{k:03d}",
                "text": edited_copy(orig["text"], lang, edits),
                "label": "near_duplicate",
                "copy_of": orig["id"],
            }
            docs.insert(edits.randint(docs.index(orig) + 1, len(docs)), copy)
        # Low-quality pages for the heuristic filters, from a generator of their own so that the rest of
        # the corpus stays as it was: a sentence repeated line after line, and prose stuffed with spam.
        extra = random.Random(f"{seed}:{source}:quality")
        for k in range(3):
            base = extra.choice(clean[source])
            first = base.split("。")[0] + "。" if lang == "ja" else base.split(". ")[0] + "."
            text = "\n".join([first] * extra.randint(6, 9) + [base])
            docs.insert(
                extra.randint(0, len(docs)), {"id": f"{source}-q{k:03d}", "text": text, "label": "repetitive"}
            )
        for k in range(3):
            base = extra.choice(clean[source])
            cut = len(base) // 2
            stuffed = (" " if lang != "ja" else "").join(extra.choices(SPAM[lang], k=extra.randint(6, 10)))
            text = base[:cut] + (" " if lang != "ja" else "") + stuffed + " " + base[cut:]
            docs.insert(
                extra.randint(0, len(docs)), {"id": f"{source}-s{k:03d}", "text": text, "label": "spam"}
            )
        out[source] = [
            {
                "id": d["id"],
                "text": d["text"],
                "meta": {"label": d["label"], **({"copy_of": d["copy_of"]} if "copy_of" in d else {})},
            }
            for d in docs
        ]
    heldout = [{"lang": lang, "text": t} for lang in LANGS for t in pools[lang]["heldout"]]
    return out, heldout


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode("utf-8")


def render(seed: int = 13) -> dict[str, bytes]:
    """File name (relative to demo_data/) -> exact bytes of the demo data."""
    sources, heldout = build(seed)
    files: dict[str, bytes] = {}
    for source, _, name in SOURCES:
        data = _jsonl(sources[source])
        if name.endswith(".gz"):
            buf = io.BytesIO()
            with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
                gz.write(data)
            data = buf.getvalue()
        files[name] = data
    files["heldout.jsonl"] = _jsonl(heldout)
    held = {r["text"] for r in heldout}
    base_texts = [p for lang in BASE_TOKENIZER_LANGS for p in read_paragraphs(lang) if p not in held]
    for name, data in byte_level_bpe_files(base_texts, BASE_TOKENIZER_VOCAB).items():
        files[f"{BASE_TOKENIZER}/{name}"] = data
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write the demo corpus with labelled noise, and the demo base tokenizer."
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    for name, data in render(args.seed).items():
        (args.out / name).parent.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_bytes(data)
        print(f"wrote {args.out / name} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
