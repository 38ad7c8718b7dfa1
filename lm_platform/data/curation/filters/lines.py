"""What a line of a document is, for the filters that judge pages by their lines (boilerplate, prose,
fineweb, gopher_repetition, c4): a sentence, a phrase (verse, a speaker's line, a letter's greeting),
a label (a menu item, a heading), a section mark between parts, or a piece of site navigation (a menu
strip joined by separators, a breadcrumb, a bare date).

Rules written from how each thing is built, not learnt from any corpus:

- A section mark (`＊`, `※`, `○`, `×`, `一`, `二`, `３`, `IV`, `* * *`) has no letters but numerals: it
  separates parts of a work, and a work with twelve parts repeats it; it is neither duplicated text nor
  a short menu line.
- A phrase is a line that holds one of the language's function words (particles and inflections in
  Japanese, stop words elsewhere): verse, drama lines and letters are phrases; a menu item is a label.
- Navigation: a line of at least three short items joined by one separator (`·`, `|`, `•`, `-`, `/`,
  `–` with spaces), a breadcrumb (two or more short items joined by `>`, `›`, `»`), or a bare date and
  time. Items are short: at most four words, or 16 characters in Japanese.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from lm_platform.data.corpus.text import is_symbol

_KANJI_NUMERALS = set("〇一二三四五六七八九十百千零壱弐参拾廿卅第章節部幕場其の")
_ROMAN = re.compile(r"^[IVXLCivxlc]+\.?$")


@lru_cache(maxsize=1 << 16)
def is_section_mark(line: str) -> bool:
    """A line with no letters but numerals (or a few marks): `＊`, `一`, `（三）`, `第二章`, `IV`."""
    s = line.strip().strip("\u3000")
    if not s or len(s) > 12:
        return False
    if _ROMAN.match(s):
        return True
    core = "".join(ch for ch in s if not ch.isspace())
    if len(core) > 6 or sum(ch.isdigit() for ch in core) > 3:  # "12/05/2019" is a date, not a mark
        return False
    if all(ch in _KANJI_NUMERALS for ch in core if unicodedata.category(ch).startswith("L")):
        # every letter is a numeral word; a line of marks only ("＊", "* * *", "×") counts too
        return any(not unicodedata.category(ch).startswith("L") for ch in core) or any(
            ch in "〇一二三四五六七八九十百千零壱弐参拾廿卅" for ch in core
        )
    return False


# Separators of a menu strip: with or without spaces for ·|•, with spaces for - / – —.
_STRIP_SPLIT = re.compile(r"\s*[·|｜•]\s*|\s+[-/–—]\s+| {2,}")
# A link with a count: "Comments (12)", "コメント (5)", "Bình luận [3]".
_COUNTER = re.compile(r"^\D{1,30}[\s]*[(\[（]\d{1,3}[)\]）]$")  # not a year: "Camus (1957)"
_CRUMB_SPLIT = re.compile(r"\s*(?:>>|[>›»〉＞])\s*")
# A bare date or time: 12/03/2019, 2019-03-12, 2019年3月12日, 18:55, with an optional time zone.
_D = r"(?:\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}|\d{4}年\d{1,2}月(?:\d{1,2}日)?|\d{1,2}月\d{1,2}日|\d{1,2}:\d{2}(?::\d{2})?)"
_DATE = re.compile(rf"^[\s(（]*{_D}(?:[\s,]*{_D})*\s*(?:GMT[+\-]?\d*|UTC|JST|[AP]M)?[\s)）]*$")
_ENDS = (".", "!", "?", "。", "！", "？", ":", ";", ",", "、")


def _short_item(item: str, lang: str) -> bool:
    """A menu or breadcrumb item: a few words starting with a letter (not a formula, a number or an
    address), not a sentence."""
    item = item.strip()
    if not item or item.endswith(_ENDS) or not item[0].isalpha() or any(c in item for c in "<=+@"):
        return False
    return len(item) <= 16 if lang == "ja" else len(item.split()) <= 4 and len(item) <= 40


MENU_RUN = 4  # consecutive short labels that make a menu column
CHROME_LINES = 3  # a menu column starts among the first lines, a footer sits among the last


def navigation_kinds(
    lines: list[str], lang: str, labels: list[bool] | None = None, markers: tuple[str, ...] = ()
) -> tuple[set[str], int, int]:
    """(the kinds of navigation lines the page has, how many lines are navigation, how many lines are
    in menu columns and footers). Besides strips,
    breadcrumbs, dates and counters: a footer (a line with a boilerplate marker such as ©) and a menu
    column (`MENU_RUN` short labels in a row, `labels` marking which lines are labels)."""
    kinds: set[str] = set()
    n = menu = run = 0
    in_menu = False
    for i, line in enumerate(lines):
        kind = navigation_kind(line, lang)
        if kind is not None:
            kinds.add(kind)
            n += 1
        elif i >= len(lines) - CHROME_LINES and any(m in line.lower() for m in markers):
            kind = "footer"  # chrome like a menu column: not counted as a navigation line on its own
            kinds.add(kind)
            menu += 1
        if labels is not None and labels[i] and kind is None:
            run += 1
        else:
            run, in_menu = 0, False
        if run == MENU_RUN and i - MENU_RUN + 1 < CHROME_LINES:
            kinds.add("menu")
            in_menu = True
            menu += MENU_RUN
        elif in_menu:
            menu += 1
    return kinds, n, menu


def navigation_kind(line: str, lang: str) -> str | None:
    """'strip', 'breadcrumb', 'date' or None."""
    s = line.strip()
    if not s or len(s) > 400:
        return None
    if _DATE.match(s):
        return "date"
    if _COUNTER.match(s):
        return "counter"
    crumbs = _CRUMB_SPLIT.split(s)
    if len(crumbs) >= 2 and all(_short_item(c, lang) for c in crumbs):
        return "breadcrumb"
    items = _STRIP_SPLIT.split(s)
    if len(items) >= 3 and all(_short_item(c, lang) for c in items):
        return "strip"
    return None


# Function words: a line holding one is a phrase of running text (verse, a speaker's line, a letter's
# greeting, classical prose that ends its sentences with "、"), not a label. Japanese: particles,
# auxiliaries and inflections (MeCab words, classical ones included); Vietnamese and English: common
# grammatical words. Other languages: the recipe's stop words, or words derived from the language's
# high-quality source (lm_platform.data.curation.filters.resources).
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "ja": frozenset(
        [
            "の",
            "に",
            "は",
            "を",
            "た",
            "が",
            "で",
            "て",
            "と",
            "し",
            "も",
            "へ",
            "や",
            "か",
            "な",
            "だ",
            "ない",
            "ます",
            "です",
            "よ",
            "ね",
            "ぬ",
            "ず",
            "ば",
            "から",
            "まで",
            "より",
            "けり",
            "なり",
            "たり",
            "き",
            "む",
            "ん",
            "う",
            "だろ",
            "でし",
            "まし",
            "さ",
            "わ",
            "ぞ",
            "ながら",
            "つつ",
            "ど",
            "ども",
            "けれど",
            "れる",
            "られる",
            "せる",
            "させる",
            "たい",
            "らしい",
            "よう",
            "そう",
            "ある",
            "いる",
            "する",
            "なる",
            "つ",
            "り",
            "べし",
            "じ",
            "まじ",
            "けむ",
            "らむ",
            "ゆ",
            "こそ",
            "ぞ",
            "なむ",
        ]
    ),
    "vi": frozenset(
        [
            "và",
            "của",
            "là",
            "có",
            "được",
            "trong",
            "các",
            "cho",
            "những",
            "với",
            "một",
            "không",
            "này",
            "đó",
            "để",
            "từ",
            "khi",
            "đã",
            "sẽ",
            "đang",
            "thì",
            "mà",
            "như",
            "cũng",
            "về",
            "theo",
            "tại",
            "bị",
            "nhưng",
            "vì",
            "nên",
            "rằng",
            "ở",
            "ra",
            "lại",
            "rất",
            "còn",
            "nếu",
            "hay",
            "hoặc",
            "mình",
            "tôi",
            "anh",
            "em",
            "ta",
            "ai",
            "gì",
        ]
    ),
    "en": frozenset(
        [
            "the",
            "a",
            "an",
            "of",
            "and",
            "to",
            "in",
            "is",
            "was",
            "are",
            "were",
            "be",
            "been",
            "that",
            "which",
            "who",
            "with",
            "for",
            "on",
            "at",
            "by",
            "from",
            "as",
            "it",
            "he",
            "she",
            "they",
            "we",
            "i",
            "you",
            "my",
            "his",
            "her",
            "their",
            "our",
            "its",
            "not",
            "but",
            "or",
            "if",
            "when",
            "this",
            "these",
            "those",
            "had",
            "has",
            "have",
            "do",
            "did",
            "will",
            "would",
            "shall",
            "should",
            "can",
            "could",
            "may",
            "might",
        ]
    ),
}


PHRASE_WORDS = {"ja": 3}  # MeCab words; elsewhere four words ("Contact the team" is a menu item)
PHRASE_WORDS_DEFAULT = 4


def phrase_words(lang: str) -> int:
    return PHRASE_WORDS.get(lang, PHRASE_WORDS_DEFAULT)


def is_phrase(words, function_words: frozenset[str], min_words: int = 3) -> bool:
    """A run of at least `min_words` words holding a function word: running text, not a label."""
    if len(words) < min_words:  # too few words even with their punctuation
        return False
    n, found = 0, False
    for w in words:
        if is_symbol(w):
            continue
        n += 1
        if not found:
            found = w in function_words or w.lower() in function_words
        if found and n >= min_words:
            return True
    return False


@lru_cache(maxsize=1 << 14)
def line_words(line: str, lang: str) -> tuple[str, ...]:
    """A line's words (not Japanese), cached: boilerplate, fineweb, c4 and prose all ask for them."""
    from lm_platform.data.corpus.text import split_words

    return tuple(split_words(line, lang))


def unit_phrases(
    doc, units: list[str], function_words: frozenset[str], min_words: int | None = None
) -> list[bool]:
    """For each unit (a line of `doc.lines`, or a paragraph of hard-wrapped text): is it a phrase?
    Japanese lines reuse the document's one MeCab pass."""
    from lm_platform.data.corpus.text import split_words

    if not function_words:
        return [False] * len(units)
    min_words = phrase_words(doc.lang) if min_words is None else min_words
    if doc.lang == "ja":
        by_line = {ln.strip(): words for ln, words in zip(doc.lines, doc.line_words, strict=False)}
        return [
            is_phrase(by_line.get(u.strip()) or split_words(u, "ja"), function_words, min_words)
            for u in units
        ]
    return [is_phrase(line_words(u, doc.lang), function_words, min_words) for u in units]
