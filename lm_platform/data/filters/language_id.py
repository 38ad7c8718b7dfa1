"""Language ID offline: py3langid's naive Bayes model ships inside the PyPI package (97 languages),
so nothing is fetched at run time. Keeps a document when its top language is one the recipe expects
for the source and its normalised probability reaches the recipe's threshold."""

from __future__ import annotations

from functools import lru_cache

from lm_platform.data.filters.base import Filter
from lm_platform.data.text import Doc


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's most likely language."""
    lang, prob = _identifier().classify(text.replace("\n", " "))
    return lang, float(prob)


class LanguageId(Filter):
    name = "language_id"

    def __init__(self, cfg, lang: str):
        super().__init__(cfg, lang)
        self.accept = frozenset(cfg.languages or (lang,))
        _identifier()  # load the model once, before the first document

    def check(self, doc: Doc) -> str | None:
        found, prob = identify(doc.text[: self.cfg.max_chars])
        if found not in self.accept:
            return f"language {found} ({prob:.2f}), expected {sorted(self.accept)}"
        if prob < self.cfg.min_score:
            return f"language {found} score {prob:.2f} < {self.cfg.min_score}"
        return None
