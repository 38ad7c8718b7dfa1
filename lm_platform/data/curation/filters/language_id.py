"""Language ID offline: py3langid's naive Bayes model ships inside the PyPI package (97 languages),
so nothing is fetched at run time. Keeps a document when its top language is one the recipe expects
for the source and its normalised probability reaches the recipe's threshold. The classifier reads the
document's sentence lines (not its lists of names or titles) when they hold enough text."""

from __future__ import annotations

from functools import lru_cache

from lm_platform.data.corpus.text import Doc
from lm_platform.data.curation.filters.base import Filter
from lm_platform.recipe.filter_settings import LanguageIdFilter as LanguageIdFilter


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's most likely language."""
    lang, prob = _identifier().classify(text.replace("\n", " "))
    return lang, float(prob)


def prose_text(doc: Doc, max_chars: int, min_chars: int = 200) -> str:
    """The text to classify: the document's sentence lines (lines of at least eight words or ending in a
    full stop), when they hold `min_chars`; else the whole text. Lists of foreign names, species and
    titles in an article are not its language."""
    ends = (".", "!", "?", "。", "！", "？", "」", ":", ";")
    prose = [ln for ln in doc.lines if len(ln.split()) >= 8 or ln.rstrip().endswith(ends)]
    text = "\n".join(prose)
    return (text if len(text) >= min_chars else doc.text)[:max_chars]


class LanguageId(Filter):
    name = "language_id"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        self.accept = frozenset(cfg.languages or (lang,))
        _identifier()  # load the model once, before the first document

    def check(self, doc: Doc) -> str | None:
        found, prob = identify(prose_text(doc, self.cfg.max_chars))
        if found not in self.accept:
            return f"language {found} ({prob:.2f}), expected {sorted(self.accept)}"
        if prob < self.cfg.min_score:
            return f"language {found} score {prob:.2f} < {self.cfg.min_score}"
        return None
