"""Seeded noise made from real text: the kinds of documents curation must remove.

Every noise document is built from real documents held apart from the ones the filters are measured
on (`held_apart` splits a set by a hash of each id), so noise carries real words, real spelling and
real sentence lengths: a filter cannot catch it by spotting text the project wrote. Kinds:

- `word_salad`: real words (Vietnamese and English: space-separated tokens; Japanese: MeCab words)
  shuffled across documents into sentences and paragraphs of natural lengths and punctuation.
- `navigation`: a site's menu bar, section links, article-title links, dates, teasers cut off with an
  ellipsis and a copyright footer, every line distinct.
- `navigation_repeated`: the same page with its menu and link blocks repeated (header and footer).
- `mojibake`: real text as UTF-8 bytes decoded with the wrong codec (cp1252, latin-1; Japanese also
  cp932), whole or in part.
- `wrong_language`: real text of another language.
- `repetition`: a real paragraph or sentence repeated, or every line of a real document doubled.
- `keyword_spam`: a few phrases taken from a real document, repeated in comma- or space-separated runs.
- `short_snippet`: a fragment of a real sentence (a few words; Japanese: under 45 characters).
- `navigation_strip`: what a crawl keeps of a news page: a menu strip joined by a separator (`·`, `-`,
  `|`, `/`, `•`, with or without spaces), a breadcrumb (`Thời sự > Xe`), sometimes a date, a share bar
  or a footer strip, above a short fragment of a real article (one to four real sentences).
- `seo_spam`: sentences an SEO page is made of, built around real phrases (noun phrases of a real
  document) in a place or a shop's name: "渋谷で即日融資なら当店へ。即日融資、即日融資の最安値ランキング。"
- `word_salad_lines`: real words shuffled across documents, cut into lines of a few words (verse-like,
  no terminal punctuation), sometimes in blank-line separated groups.

The generator knows nothing about the filters and takes no threshold: change it only on its own
(never in the same commit as a threshold), so measured recall stays comparable across tuning.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from lm_platform.data.corpus.text import split_words
from lm_platform.data.curation.reference_lm import in_hash_share

NOISE_TYPES = (
    "word_salad",
    "navigation",
    "navigation_repeated",
    "mojibake",
    "wrong_language",
    "repetition",
    "keyword_spam",
    "short_snippet",
    "navigation_strip",
    "seo_spam",
    "word_salad_lines",
)

# Menu items a site's navigation uses, per language (generic words, not taken from the dev sample).
_NAV = {
    "vi": (
        "Trang chủ",
        "Tin tức",
        "Thời sự",
        "Thế giới",
        "Kinh doanh",
        "Giải trí",
        "Thể thao",
        "Pháp luật",
        "Giáo dục",
        "Sức khỏe",
        "Đời sống",
        "Du lịch",
        "Khoa học",
        "Số hóa",
        "Xe",
        "Ý kiến",
        "Tâm sự",
        "Liên hệ",
        "Giới thiệu",
        "Đăng nhập",
        "Đăng ký",
        "Tìm kiếm",
        "Xem thêm",
        "Video",
        "Podcast",
        "Quảng cáo",
        "Điều khoản sử dụng",
        "Chính sách bảo mật",
        "Tuyển dụng",
        "RSS",
        "Mới nhất",
    ),
    "ja": (
        "ホーム",
        "ニュース",
        "国内",
        "国際",
        "経済",
        "エンタメ",
        "スポーツ",
        "IT",
        "科学",
        "ライフ",
        "地域",
        "トピックス",
        "ランキング",
        "お問い合わせ",
        "会社概要",
        "ログイン",
        "新規登録",
        "検索",
        "もっと見る",
        "動画",
        "特集",
        "利用規約",
        "プライバシーポリシー",
        "サイトマップ",
        "採用情報",
        "広告掲載",
        "ヘルプ",
    ),
    "en": (
        "Home",
        "News",
        "World",
        "Business",
        "Sport",
        "Entertainment",
        "Health",
        "Science",
        "Tech",
        "Travel",
        "Opinion",
        "About us",
        "Contact",
        "Sign in",
        "Register",
        "Search",
        "More",
        "Video",
        "Podcasts",
        "Advertise",
        "Terms of use",
        "Privacy policy",
        "Careers",
        "Sitemap",
        "Latest",
        "RSS",
    ),
}
_FOOTER = {
    "vi": ("© {y} {s}. Bảo lưu mọi quyền.", "Bản quyền thuộc về {s}", "Giấy phép số {n}/GP-BTTTT"),
    "ja": ("© {y} {s} All Rights Reserved.", "Copyright © {s}", "無断転載を禁じます"),
    "en": ("© {y} {s}. All rights reserved.", "Copyright {y} {s}", "Powered by {s}"),
}
_MORE = {"vi": ("Xem thêm", "Bình luận", "Chia sẻ"), "ja": ("続きを読む", "コメント", "シェア"),
         "en": ("Read more", "Comments", "Share")}  # fmt: skip
_SITES = {"vi": ("Báo Mới", "Tin Nhanh", "Cổng thông tin"), "ja": ("ニュースサイト", "Tokyo Times", "情報ポータル"),
          "en": ("Daily Post", "Netsite", "The Courier")}  # fmt: skip
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")
_JA_CONTENT = re.compile(r"^[\u4e00-\u9fff\u30a0-\u30ff々ー]{2,}$")


def held_apart(doc_id: str, share: float = 0.2, salt: str = "noise") -> bool:
    """Whether a real document is held apart as noise material (fixed per id): noise is made only from
    these, and filters are measured on the others."""
    return in_hash_share(f"{salt}:{doc_id}", share)


def _words(text: str, lang: str) -> list[str]:
    if lang == "ja":
        return [w for w in split_words(text, "ja") if w not in "。\n"]
    return text.split()


def _sentences(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        out += [s.strip() for s in _SENTENCE_END.split(line) if len(s.strip()) > 1]
    return out


def _join(lang: str, words: Sequence[str]) -> str:
    return ("" if lang == "ja" else " ").join(words)


def _cut(rng: random.Random, text: str, lo: int, hi: int) -> str:
    """A stretch of `text` of about lo..hi characters, starting at a line."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        return text
    start = rng.randrange(len(lines))
    target = rng.randint(lo, hi)
    out: list[str] = []
    for ln in lines[start:] + lines[:start]:
        out.append(ln)
        if sum(map(len, out)) >= target:
            break
    return "\n".join(out)[: hi + 200]


def _sentence_case(lang: str, s: str) -> str:
    return s if lang == "ja" else s[:1].upper() + s[1:]


def word_salad(rng: random.Random, lang: str, texts: Sequence[str]) -> str:
    pool: list[str] = []
    for t in rng.sample(list(texts), min(len(texts), 8)):
        pool += _words(t[:20_000], lang)
    end, comma = ("。", "、") if lang == "ja" else (".", ",")
    paragraphs = []
    for _ in range(rng.randint(2, 6)):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            n = rng.randint(12, 40) if lang == "ja" else rng.randint(8, 28)
            words = [rng.choice(pool) for _ in range(n)]
            words = [w.rstrip(".。!?！？") or comma for w in words]
            sentences.append(_sentence_case(lang, _join(lang, words)).rstrip(comma) + end)
        paragraphs.append(("" if lang == "ja" else " ").join(sentences))
    return "\n".join(paragraphs)


def _titles(rng: random.Random, lang: str, texts: Sequence[str], n: int) -> list[str]:
    out = []
    sentences = [s for t in rng.sample(list(texts), min(len(texts), 6)) for s in _sentences(t[:20_000])]
    for s in rng.sample(sentences, min(n, len(sentences))):
        if lang == "ja":
            out.append(s[: rng.randint(10, 32)].rstrip("、。"))
        else:
            out.append(" ".join(s.split()[: rng.randint(4, 12)]).rstrip(".,;:!?"))
    return out


def _navigation(rng: random.Random, lang: str, texts: Sequence[str], repeated: bool) -> str:
    nav, site = _NAV[lang], rng.choice(_SITES[lang])
    sep = rng.choice((" | ", " · ", " / ", "  ", "\n"))
    menu = [sep.join(rng.sample(nav, rng.randint(5, 10)))]
    if sep == "\n":
        menu = rng.sample(nav, rng.randint(6, 12))
    titles = _titles(rng, lang, texts, rng.randint(8, 24))
    body: list[str] = []
    for title in titles:
        body.append(title)
        r = rng.random()
        if r < 0.25:
            body.append(f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2015, 2024)}")
        elif r < 0.45:
            teaser = rng.choice(_sentences(rng.choice(texts)[:5000]) or [title])
            cut = (
                teaser[: rng.randint(20, 60)]
                if lang == "ja"
                else " ".join(teaser.split()[: rng.randint(6, 14)])
            )
            body.append(cut + "...")
        elif r < 0.55:
            body.append(f"{rng.choice(_MORE[lang])} ({rng.randint(1, 99)})")
    footer = [f.format(y=rng.randint(2010, 2024), s=site, n=rng.randint(10, 999)) for f in _FOOTER[lang]][
        : rng.randint(1, 3)
    ]
    if not repeated:
        body = list(dict.fromkeys(body))
        more = [m for m in nav if m not in "\n".join(menu)][: rng.randint(2, 6)]
        return "\n".join(menu + body + more + footer)
    block = body[: max(3, len(body) // 3)]
    return "\n".join(menu + block + body + menu + block + footer)


def mojibake(rng: random.Random, lang: str, texts: Sequence[str]) -> str:
    candidates = [t for t in texts if not t.isascii()] or list(texts)
    for _ in range(20):  # a stretch with something to break: ASCII survives every codec unchanged
        text = _cut(rng, rng.choice(candidates), 300, 4000)
        if sum(not c.isascii() for c in text) >= 3:
            break
    codecs = ["cp1252", "latin-1"] + (["cp932"] if lang == "ja" else [])
    codec = rng.choice(codecs)
    if rng.random() < 0.3:  # part of the page broken, the rest intact
        k = len(text) // 2
        return text[:k] + text[k:].encode("utf-8").decode(codec, errors="replace")
    return text.encode("utf-8").decode(codec, errors="replace")


def wrong_language(rng: random.Random, lang: str, other: Sequence[str]) -> str:
    return _cut(rng, rng.choice(other), 300, 5000)


def repetition(rng: random.Random, lang: str, texts: Sequence[str]) -> str:
    text = rng.choice(texts)
    lines = [ln for ln in text.split("\n") if len(ln.strip()) > 20] or [text]
    kind = rng.random()
    if kind < 0.4:  # a paragraph over and over
        para = rng.choice(lines)[:800]
        return "\n".join([para] * rng.randint(4, 15))
    if kind < 0.7:  # one sentence repeated inside one paragraph
        sentence = rng.choice(_sentences(text[:20_000]) or lines)
        return (" " if lang != "ja" else "").join([sentence] * rng.randint(10, 40))
    doubled = []
    for ln in lines[: rng.randint(4, 20)]:
        doubled += [ln] * rng.randint(2, 3)
    return "\n".join(doubled)


def keyword_spam(rng: random.Random, lang: str, texts: Sequence[str]) -> str:
    words = _words(rng.choice(texts)[:20_000], lang)
    if lang == "ja":
        content = [w for w in words if _JA_CONTENT.match(w)] or words
        phrases = rng.sample(content, min(len(content), rng.randint(3, 6)))
    else:
        clean = [w.strip(".,;:!?()\"'“”") for w in words]
        clean = [w for w in clean if len(w) > 1]
        starts = [rng.randrange(max(1, len(clean) - 3)) for _ in range(rng.randint(3, 6))]
        phrases = [" ".join(clean[s : s + rng.randint(1, 3)]) for s in starts]
    sep = rng.choice(("、", " ", "・")) if lang == "ja" else rng.choice((", ", " ", " | ", " - "))
    lines = []
    for _ in range(rng.randint(3, 12)):
        n = rng.randint(6, 20)
        lines.append(sep.join(rng.choice(phrases) for _ in range(n)))
    if rng.random() < 0.4:
        lines.insert(0, rng.choice(_sentences(rng.choice(texts)[:5000]) or lines))
    return "\n".join(lines)


def short_snippet(rng: random.Random, lang: str, texts: Sequence[str]) -> str:
    sentence = rng.choice(_sentences(rng.choice(texts)[:20_000]) or [rng.choice(texts)])
    if lang == "ja":
        return sentence[: rng.randint(5, 44)]
    return " ".join(sentence.split()[: rng.randint(2, 20)])


_CRUMB_SEPS = (" > ", " › ", " » ", " / ", ">", " >> ")
_STRIP_SEPS = (" · ", " - ", " | ", "·", "|", " / ", " • ", " – ", "  |  ")
_SHARE = {"vi": ("Chia sẻ", "Bình luận", "Lưu", "In bài"), "ja": ("シェア", "ツイート", "ブックマーク", "印刷"),
          "en": ("Share", "Tweet", "Email", "Print")}  # fmt: skip


def navigation_strip(rng: random.Random, lang: str, texts: Sequence[str]) -> str:
    nav, site = _NAV[lang], rng.choice(_SITES[lang])
    sep = rng.choice(_STRIP_SEPS)
    lines = []
    if rng.random() < 0.5:
        lines.append(site)
    lines.append(sep.join(rng.sample(nav, rng.randint(4, 12))))
    crumb = [rng.choice(nav[:3])] + rng.sample(nav[2:16], rng.randint(1, 2))
    lines.append(rng.choice(_CRUMB_SEPS).join(crumb))
    if rng.random() < 0.4:
        lines.append(
            f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2015, 2024)} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        )
    sentences = _sentences(rng.choice(texts)[:20_000]) or [rng.choice(texts)[:300]]
    start = rng.randrange(len(sentences))
    fragment = sentences[start : start + rng.randint(1, 4)]
    lines.append(("" if lang == "ja" else " ").join(fragment))
    if rng.random() < 0.5:
        lines.append(sep.join(rng.sample(_SHARE[lang], rng.randint(2, 4))))
    if rng.random() < 0.5:
        lines.append(sep.join(rng.sample(nav, rng.randint(3, 8))))
    return "\n".join(lines)


_SPAM = {
    "ja": ("{p}で{k}なら{s}へ。", "{k}、{k}の最安値ランキング。", "{k}なら{s}！{k}の口コミ・評判をチェック。",
           "【{p}】{k}・{k2}の人気おすすめ{n}選。", "{k}を今すぐ比較。{k2}も{k}も{s}で。", "{p}の{k}、{k2}は当店へお任せください。"),
    "vi": ("{k} giá rẻ tại {p}, {k} uy tín nhất.", "Dịch vụ {k} {p} - {k} chất lượng - {k2} giá tốt.",
           "Top {n} {k} tốt nhất {p} năm {y}.", "Mua {k} ở đâu? {s} chuyên {k}, {k2} chính hãng.",
           "Liên hệ {s} để được tư vấn {k} miễn phí. {k} {p}, {k2} {p}."),
    "en": ("Best {k} in {p}. Cheap {k}, {k} deals at {s}.", "Top {n} {k} and {k2} reviews {y}.",
           "Looking for {k} near {p}? {s} has {k}, {k2} and more {k}.", "{k} {p} | {k2} {p} | {k} online.",
           "Buy {k} now: {k} sale, {k} discount, free {k2} shipping."),
}  # fmt: skip


def _phrases(rng: random.Random, lang: str, text: str, n: int) -> list[str]:
    """Noun-like phrases of a real document: Japanese runs of kanji/katakana words, else 1-3 words."""
    words = _words(text[:20_000], lang)
    if lang == "ja":
        content = [w for w in words if _JA_CONTENT.match(w)] or [w for w in words if len(w) > 1] or words
        return [rng.choice(content) + (rng.choice(content) if rng.random() < 0.4 else "") for _ in range(n)]
    clean = [w.strip(".,;:!?()\"'“”") for w in words]
    clean = [w for w in clean if len(w) > 1] or ["x"]
    out = []
    for _ in range(n):
        at = rng.randrange(max(1, len(clean) - 3))
        out.append(" ".join(clean[at : at + rng.randint(1, 3)]).lower())
    return out


def seo_spam(rng: random.Random, lang: str, texts: Sequence[str]) -> str:
    keys = _phrases(rng, lang, rng.choice(texts), rng.randint(2, 4))
    places = _phrases(rng, lang, rng.choice(texts), 2)
    site = rng.choice(_SITES[lang])
    out = []
    for _ in range(rng.randint(3, 10)):
        line = []
        for _ in range(rng.randint(1, 4)):
            k, k2 = rng.choice(keys), rng.choice(keys)
            t = rng.choice(_SPAM[lang])
            line.append(
                t.format(
                    k=k, k2=k2, p=rng.choice(places), s=site, n=rng.randint(3, 30), y=rng.randint(2018, 2025)
                )
            )
        out.append(("" if lang == "ja" else " ").join(line))
    if rng.random() < 0.3:
        out.insert(rng.randrange(len(out) + 1), rng.choice(_sentences(rng.choice(texts)[:5000]) or out))
    return "\n".join(out)


def word_salad_lines(rng: random.Random, lang: str, texts: Sequence[str]) -> str:
    pool: list[str] = []
    for t in rng.sample(list(texts), min(len(texts), 8)):
        pool += [w.strip(".。!?！？") for w in _words(t[:20_000], lang)]
    pool = [w for w in pool if w] or ["x"]
    lines: list[str] = []
    for _ in range(rng.randint(3, 8)):
        for _ in range(rng.randint(2, 8)):
            n = rng.randint(4, 14) if lang == "ja" else rng.randint(3, 12)
            lines.append(_sentence_case(lang, _join(lang, [rng.choice(pool) for _ in range(n)])))
        if rng.random() < 0.6:
            lines.append("")
    return "\n".join(lines).strip()


def make_noise(
    kind: str,
    lang: str,
    texts: Sequence[str],
    n: int,
    seed: int = 0,
    other_lang_texts: Sequence[str] = (),
) -> list[str]:
    """`n` noise documents of `kind` in language `lang`, made from real `texts` (held-apart documents of
    that language); `wrong_language` takes `other_lang_texts` instead. Same inputs, same seed: same
    documents."""
    if kind not in NOISE_TYPES:
        raise ValueError(f"unknown noise kind '{kind}' (known: {list(NOISE_TYPES)})")
    if lang not in _NAV:
        raise ValueError(f"no noise generator for language '{lang}' (have: {sorted(_NAV)})")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"{kind}/{lang}: no real text to make noise from")
    if kind == "wrong_language" and not other_lang_texts:
        raise ValueError(f"wrong_language/{lang}: needs text of another language")
    rng = random.Random(f"{seed}:{kind}:{lang}")
    out = []
    for _ in range(n):
        if kind == "word_salad":
            out.append(word_salad(rng, lang, texts))
        elif kind in ("navigation", "navigation_repeated"):
            out.append(_navigation(rng, lang, texts, repeated=kind == "navigation_repeated"))
        elif kind == "mojibake":
            out.append(mojibake(rng, lang, texts))
        elif kind == "wrong_language":
            out.append(wrong_language(rng, lang, other_lang_texts))
        elif kind == "repetition":
            out.append(repetition(rng, lang, texts))
        elif kind == "keyword_spam":
            out.append(keyword_spam(rng, lang, texts))
        elif kind == "navigation_strip":
            out.append(navigation_strip(rng, lang, texts))
        elif kind == "seo_spam":
            out.append(seo_spam(rng, lang, texts))
        elif kind == "word_salad_lines":
            out.append(word_salad_lines(rng, lang, texts))
        else:
            out.append(short_snippet(rng, lang, texts))
    return out
