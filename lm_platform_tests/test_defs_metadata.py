"""defs/metadata.py turns a core result into Dagster metadata by the type of each value."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from lm_platform.data.blending.pack import PackResult
from lm_platform.defs.metadata import HEADLINE_KEY, headline, materialize, to_metadata
from lm_platform.tokenization.fertility import FertilityReport


def test_values_convert_by_type():
    meta = to_metadata(
        docs=3,
        rate=0.5,
        name="x",
        on=True,
        nothing=None,
        out=Path("/tmp/a"),
        counts={"a": 1},
        rows=[{"lang": "vi", "docs": 1200}],
        ids=[1, 2],
        ready=dg.MetadataValue.text("kept"),
    )
    assert meta["docs"] == 3 and meta["rate"] == 0.5 and meta["name"] == "x"
    assert meta["on"] == dg.MetadataValue.bool(True)
    assert meta["nothing"] == dg.MetadataValue.null()
    assert meta["out"] == dg.MetadataValue.path("/tmp/a")
    assert meta["counts"] == dg.MetadataValue.json({"a": 1})
    assert meta["rows"].value == "| lang | docs |\n|---|---|\n| vi | 1,200 |"
    assert meta["ids"] == dg.MetadataValue.json([1, 2])
    assert meta["ready"] == dg.MetadataValue.text("kept")
    with pytest.raises(TypeError, match="no metadata conversion"):
        to_metadata(bad=object())


def test_a_frozen_result_becomes_metadata_field_by_field_and_extras_win():
    report = FertilityReport(({"lang": "vi", "change": -0.5},), "held-out", has_base=True)
    meta = to_metadata(report, measured_on="elsewhere")
    assert set(meta) == {"rows", "measured_on", "has_base", "worse", "missing"}
    assert meta["measured_on"] == "elsewhere" and meta["worse"] == dg.MetadataValue.json([])
    assert report.passed is True and report.reductions == {"vi_tokens_per_char_reduction": 0.5}
    index = dict.fromkeys(PackResult.__dataclass_fields__, 0) | {
        "splits": {},
        "sources": {},
        "dtype": "uint16",
    }
    result = materialize(PackResult(**index), path=Path("/d"))
    assert result.metadata["dtype"] == "uint16" and result.metadata["path"] == dg.MetadataValue.path("/d")


def test_headline_declares_fields_for_the_summary():
    assert headline("docs", "tokens")[HEADLINE_KEY] == dg.MetadataValue.json(["docs", "tokens"])
