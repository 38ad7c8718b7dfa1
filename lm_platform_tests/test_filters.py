"""Normalisation and each filter: documents that must pass and must fail, per language."""

from __future__ import annotations

import unicodedata

import pytest

from lm_platform.data.curation.filters import build_filter, script_ratio, undo_mojibake
from lm_platform.data.curation.normalize import normalize_text
from lm_platform.demo.generate import read_paragraphs, sloppy_cp1252
from lm_platform.recipe.schema import BoilerplateFilter, EncodingFilter, LengthFilter, ScriptFilter

VI = read_paragraphs("vi")[0]
JA = read_paragraphs("ja")[0]
EN = read_paragraphs("en")[0]


def test_normalize_unifies_unicode_form_and_whitespace():
    nfd = unicodedata.normalize("NFD", VI)
    assert nfd != VI
    assert normalize_text("  " + nfd.replace(" ", " \t ") + "\r\n\r\n\r\n\r\nend ", "NFC") == VI + "\n\nend"
    assert normalize_text("ﾃｽﾄ｡ＡＢＣ", "NFKC") == "テスト。ABC"
    assert normalize_text("a\x00b\u200bc\ufeff", "NFC") == "abc"
    # A stray C1 control is stripped: the encoding filter judged the raw text before (many: dropped).
    assert normalize_text("x\x81y", "NFC") == "xy"


def test_length_filter():
    f = build_filter(LengthFilter(min_chars=10, max_chars=20), "en")
    assert f("short") is not None and "min 10" in f("short")
    assert f("just right ok") is None
    assert "max 20" in f("x" * 21)


@pytest.mark.parametrize(
    ("lang", "good", "bad"),
    [("vi", VI, [EN, JA]), ("ja", JA, [EN, VI]), ("en", EN, [VI, JA])],
)
def test_script_filter_keeps_the_language_and_drops_the_others(lang, good, bad):
    threshold = {"vi": 0.3, "ja": 0.7, "en": 0.97}[lang]
    f = build_filter(ScriptFilter(min_ratio=threshold), lang)
    assert f(good) is None, script_ratio(good, lang)
    for text in bad:
        assert f(text) is not None


def test_script_filter_refuses_unknown_language():
    with pytest.raises(ValueError, match="no rule for language 'fr'"):
        build_filter(ScriptFilter(), "fr")


def test_boilerplate_filter():
    f = build_filter(BoilerplateFilter(markers=("©", "cookie")), "en")
    nav = "\n".join(["Home", "About us", "Contact", "Sign in", "Share this page"] * 3)
    assert "short-line" in f(nav)
    footer = "\n".join(
        [
            "Copyright © Sample Press, every page of this website is covered.",
            "This site uses cookie files to remember what you did last time.",
            "A long line of real prose that goes on and on for a while here.",
        ]
    )
    assert "marker" in f(footer)
    assert f(EN) is None  # a paragraph of prose mentioning nothing of the sort
    assert f("A recipe for cookies, which every cookie lover will enjoy, as a single paragraph.") is None


@pytest.mark.parametrize("text", [VI, JA])
def test_encoding_filter_catches_mojibake_and_keeps_clean_text(text):
    f = build_filter(EncodingFilter(), "vi")
    broken = sloppy_cp1252(text)
    assert undo_mojibake(broken) == text
    assert "mojibake" in f(broken)
    assert f(text) is None
    assert f(EN) is None and f("café, naïve, déjà vu — ok") is None


def test_encoding_filter_catches_replacement_characters():
    f = build_filter(EncodingFilter(), "en")
    assert "replacement" in f(EN[:50] + "\ufffd" + EN[50:])
    tolerant = build_filter(EncodingFilter(max_bad_char_fraction=0.05), "en")
    assert tolerant(EN[:50] + "\ufffd" + EN[50:]) is None
