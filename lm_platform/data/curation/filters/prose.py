"""Is this running prose? Word salad and navigation pages, caught without a reference model.

Two signals, each per language:

- Prose share: the share of the document's characters that sit in sentence lines (a line ending in
  the language's terminal punctuation, with at least `min_sentence_words` words; Japanese: at least
  `min_sentence_chars` characters). A navigation page is menu items, link titles, dates and footers;
  an article with headings, lists and a reference tail is still mostly sentences by characters, so
  headings and list items do not count against it.
- Function-word order: words that must be followed by a content word (articles and prepositions in
  English, plural markers, classifiers and prepositions in Vietnamese, case and topic particles in
  Japanese) followed instead by another function word. Real sentences almost never do that; words
  shuffled across documents do it at about the rate function words occur (word salad keeps every
  word's frequency, so stop-word counts alone cannot see it). Japanese also counts a past or
  conjunctive ending right after a particle ("はた", "にて" is one word) and a case or topic particle
  opening a sentence, a clause after a comma or a quotation ("。は", "、の"). One such pair is not
  enough: a document needs `min_disordered_pairs` of them, so a phrasal verb ("coming in for") or a
  short text's single accident does not decide.
"""

from __future__ import annotations

from lm_platform.data.corpus.text import Doc, hard_wrapped, is_symbol, units
from lm_platform.data.curation.filters.base import Filter
from lm_platform.data.curation.filters.lines import is_section_mark, unit_phrases
from lm_platform.data.curation.filters.resources import function_words
from lm_platform.recipe.filter_settings import ProseFilter

# Function words that open a phrase and want a content word next, and the function words that cannot
# come right after them (conjunctions, auxiliaries, copulas, other openers), per language. Small closed
# lists written from each language's grammar, not learnt from any corpus.
_EN_OPEN = frozenset(
    [
        "of",
        "and",
        "or",
        "to",
        "in",
        "with",
        "from",
        "by",
        "at",
        "for",
        "on",
        "is",
        "was",
        "are",
        "were",
        "be",
        "been",
        "but",
    ]
)
_EN_ARTICLE_BAD = _EN_OPEN | frozenset(
    [
        "the",
        "a",
        "an",
        "that",
        "which",
        "who",
        "it",
        "he",
        "she",
        "they",
        "we",
        "i",
        "his",
        "their",
        "its",
        "not",
    ]
)
_VI_BAD = frozenset(
    [
        "và",
        "là",
        "thì",
        "mà",
        "đã",
        "sẽ",
        "đang",
        "bị",
        "cũng",
        "với",
        "cho",
        "được",
        "để",
        "hoặc",
        "nhưng",
        "trong",
        "từ",
        "ở",
        "về",
        "của",
        "các",
        "những",
        "không",
        "này",
        "đó",
        "rằng",
        "nên",
        "vì",
        "nếu",
        "khi",
        "tại",
        "theo",
        "do",
        "bởi",
        "qua",
    ]
)
_JA_PARTICLES = frozenset(["を", "が", "に", "で", "へ", "は", "も", "の", "と", "。"])
# Past and conjunctive endings and auxiliaries bind to a verb or adjective stem, never to a particle.
_JA_ENDINGS = frozenset(["た", "て", "ます", "れる", "られる", "だ"])
# Case and topic particles close a noun phrase, so none opens a sentence, a clause after a comma or a
# quotation; が, で and と can (conjunctions "が、", "で、", a quoted thought "…、と思った") and are left out.
_JA_AFTER_BREAK = frozenset(["を", "は", "に", "へ", "の", "も"])
# "\n": a line of verse or a speaker's line opens like a sentence, never on a case particle.
_JA_BREAKS = ("。", "、", "「", "『", "（", "\n")
HEADS: dict[str, dict[str, frozenset[str]]] = {
    "en": {
        # an article wants its noun on the same line: a line of verse does not end on "the"
        **dict.fromkeys(("the", "a", "an"), _EN_ARTICLE_BAD | {"\n"}),
        **dict.fromkeys(("of", "in", "from", "with", "at", "by", "on", "for"), _EN_OPEN),
        # a possessive determiner is followed by its noun (or an adjective), on the same line: never by an
        # article, a preposition, a conjunction or an auxiliary ("our a", "their of", "my and")
        **dict.fromkeys(("my", "your", "our", "their"), _EN_OPEN | {"the", "a", "an", "\n"}),
        # "to" takes a verb or a noun phrase, never a preposition or a finite auxiliary ("to of", "to was");
        # "to and fro", "to and from" stay in
        "to": frozenset(["of", "to", "from", "with", "at", "is", "was", "are", "were", "been"]),
    },
    "vi": {  # plural markers and quantifiers want a noun; "của" (of) wants its possessor
        **dict.fromkeys(("các", "những", "mỗi", "mọi", "vài"), _VI_BAD | {"\n"}),
        # a possessor may open on a plural marker: "xe của các doanh nghiệp" (the enterprises' cars)
        "của": (_VI_BAD - {"các", "những"}) | {"\n"},
        "một": (_VI_BAD - {"trong", "khi"}) | {"\n"},  # một trong (one of), một khi (once)
    },
    "ja": {  # case particles follow a noun phrase; a sentence does not end on one ("をも" is emphatic を)
        "を": (_JA_PARTICLES - {"も"}) | _JA_ENDINGS,
        "が": _JA_PARTICLES | _JA_ENDINGS,
        "は": frozenset(["を", "が", "に", "で", "へ", "は", "も", "の", "。"]) | _JA_ENDINGS,
        **dict.fromkeys(("に", "で", "へ"), frozenset(["を", "が", "に", "で", "へ", "。"]) | _JA_ENDINGS),
        **dict.fromkeys(_JA_BREAKS, _JA_AFTER_BREAK),
        # a line opens like a sentence: not on a case particle, a bound ending or a comma
        "\n": _JA_AFTER_BREAK | _JA_ENDINGS | {"、", "。"},
    },
}
_SENTENCE_END = {
    "ja": ("。", "！", "？", "」", "』", "）", "…", "!", "?", ".", ")"),
    None: (".", "!", "?", ":", ";", '"', "'", "”", "’", ")", "…", "»"),
}


# Syllables that are a head only outside these words: "nội các" (the cabinet) is a noun, not "nội" and the
# plural marker "các".
_NOT_HEADS = {"vi": frozenset([("nội", "các")])}


def function_word_disorder(words: list[str], lang: str) -> tuple[float, int]:
    """(share of phrase-opening function words followed by a function word that cannot follow them,
    how many openers there were); (0, 0) for a language without lists."""
    heads = HEADS.get(lang)
    if not heads:
        return 0.0, 0
    kept = _JA_BREAKS if lang == "ja" else ()
    if lang == "ja":  # words as in HEADS: Japanese as written, others in lower case
        keys = [w for w in words if not is_symbol(w) or w in kept]
    else:
        keys = [w.lower() for w in words if not is_symbol(w)]
    n = bad = 0
    not_heads = _NOT_HEADS.get(lang, frozenset())
    for prev, cur, nxt in zip(["\n", *keys], keys, keys[1:], strict=False):
        follow = heads.get(cur)
        if follow is not None and (prev, cur) not in not_heads:
            n += 1
            bad += nxt in follow
    return (bad / n if n else 0.0), n


class Prose(Filter):
    name = "prose"

    def __init__(self, cfg: ProseFilter, lang: str):
        super().__init__(cfg, lang)
        self.ends = _SENTENCE_END.get(lang, _SENTENCE_END[None])
        self.function_words = function_words(lang) if cfg.phrases_are_prose else frozenset()

    def _is_sentence_line(self, line: str) -> bool:
        line = line.strip()
        if self.lang == "ja":
            size, need = len(line), self.cfg.min_sentence_chars
        else:
            size, need = len(line.split()), self.cfg.min_sentence_words
        if self.lang != "ja" and size >= 3 * need:  # a long run of words: informal prose, no full stop
            return True
        return size >= need and line.endswith(self.ends) and not line.endswith("...")

    def prose_char_share(self, doc: Doc) -> float:
        if sum(1 for ln in doc.lines if ln.strip()) < 3:  # one or two lines: no page structure to judge
            return 1.0
        lines = [u for u in units(doc.text) if not is_section_mark(u)]
        total = sum(map(len, lines))
        phrase = unit_phrases(doc, lines, self.function_words)
        prose = sum(len(ln) for ln, p in zip(lines, phrase, strict=True) if p or self._is_sentence_line(ln))
        return prose / total if total else 0.0

    def check(self, doc: Doc) -> str | None:
        c = self.cfg
        if c.min_prose_char_share is not None:
            share = self.prose_char_share(doc)
            if share < c.min_prose_char_share:
                return f"prose_share: {share:.2f} of characters in sentences < {c.min_prose_char_share}"
        if c.max_function_word_disorder is not None:
            if self.lang == "ja":  # line starts count as breaks
                words = [w for line in doc.line_words if line for w in ("\n", *line)]
            elif hard_wrapped(doc.lines):  # a wrapped line ends anywhere, "the" included
                words = [w.strip(".,;:!?()[]\"'“”‘’«»") for w in doc.text.split()]
            else:  # line ends count: an article or a plural marker wants its noun on the same line
                words = [
                    w
                    for line in doc.lines
                    if line.strip()
                    for w in (*(t.strip(".,;:!?()[]\"'“”‘’«»") for t in line.split()), "\n")
                ]
            disorder, heads = function_word_disorder([w for w in words if w], self.lang)
            pairs = round(disorder * heads)
            if (
                heads >= c.min_function_heads
                and pairs >= c.min_disordered_pairs
                and disorder > c.max_function_word_disorder
            ):
                return (
                    f"word_order: {disorder:.2f} of {heads} function words followed by a function word "
                    f"> {c.max_function_word_disorder}"
                )
        return None
