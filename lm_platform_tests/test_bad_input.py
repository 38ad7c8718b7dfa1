"""Bad input never stops a read: each case is counted and quarantined with file, line and reason, and
nothing valid is dropped. Also .zst JSONL, PDF directories with a sidecar license manifest, and caps."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from lm_platform.data.corpus.readers import ReadStats, read_source
from lm_platform.recipe.schema import SourceConfig


def _src(location, fmt="jsonl", **kw) -> SourceConfig:
    return SourceConfig(
        **{
            "name": "s",
            "location": str(location),
            "format": fmt,
            "license": "CC0-1.0",
            "language": "en",
            **kw,
        }
    )


def _line(i: int) -> bytes:
    return json.dumps({"id": f"ok{i}", "text": f"valid document {i}"}).encode() + b"\n"


def _by_line(stats: ReadStats) -> dict[tuple[str, int | None], str]:
    return {(q["file"].rsplit("/", 1)[-1], q["line"]): q["reason"] for q in stats.quarantined}


def test_every_bad_record_kind_is_quarantined_and_every_valid_one_kept(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    big = "x" * (50 * 1024 * 1024)  # a single 50 MB document
    (d / "a.jsonl").write_bytes(
        _line(0)
        + b'{"id": "broken", "text": "unterminated\n'
        + _line(1)
        + b'{"id": "u", "text": "caf\xe9 in latin-1"}\n'
        + _line(2)
        + json.dumps({"id": "nofield", "body": "text under another name"}).encode()
        + b"\n"
        + json.dumps({"id": "big", "text": big}).encode()
        + b"\n"
        + _line(3)
    )
    (d / "empty.jsonl").write_bytes(b"")
    (d / "blank.jsonl").write_bytes(b"\n\n  \n")
    stats = ReadStats()
    docs = list(read_source(_src(d, max_doc_bytes=10_000_000), stats))
    assert [x["text"] for x in docs] == [f"valid document {i}" for i in range(4)]
    reasons = _by_line(stats)
    assert reasons[("a.jsonl", 2)].startswith("malformed JSON")
    assert reasons[("a.jsonl", 4)].startswith("invalid UTF-8")
    assert reasons[("a.jsonl", 6)] == "no string field 'text'"
    assert reasons[("a.jsonl", 7)].startswith("document too large")
    assert reasons[("empty.jsonl", None)].startswith("empty file")
    assert reasons[("blank.jsonl", None)].startswith("empty file")
    assert stats.quarantined_count == 6 and stats.read == 4
    assert stats.by_reason == {
        "malformed JSON": 1,
        "invalid UTF-8": 1,
        "no string field 'text'": 1,
        "document too large": 1,
        "empty file": 2,
    }


def test_a_large_document_under_the_limit_is_kept(tmp_path):
    (tmp_path / "big.jsonl").write_text(json.dumps({"text": "y" * 3_000_000}) + "\n", encoding="utf-8")
    docs = list(read_source(_src(tmp_path / "big.jsonl", max_doc_bytes=4_000_000)))
    assert len(docs) == 1 and len(docs[0]["text"]) == 3_000_000


def test_zstd_and_gzip_jsonl(tmp_path):
    (tmp_path / "in").mkdir()
    with zstandard.open(tmp_path / "in" / "a.jsonl.zst", "wb") as fh:
        fh.write(_line(0) + b"{bad\n" + _line(1))
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wb") as fh:
        fh.write(_line(2))
    stats = ReadStats()
    docs = list(read_source(_src(tmp_path / "in"), stats))
    assert [x["text"] for x in docs] == ["valid document 0", "valid document 1", "valid document 2"]
    assert _by_line(stats) == {("a.jsonl.zst", 2): stats.quarantined[0]["reason"]}


def test_empty_parquet_and_text_files_are_quarantined(tmp_path):
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "p" / "empty.parquet")
    pq.write_table(pa.table({"text": ["kept"]}), tmp_path / "p" / "one.parquet")
    stats = ReadStats()
    assert [x["text"] for x in read_source(_src(tmp_path / "p", "parquet"), stats)] == ["kept"]
    assert stats.by_reason == {"empty file": 1}
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "empty.txt").write_bytes(b"")
    (tmp_path / "t" / "big.txt").write_text("z" * 2000, encoding="utf-8")
    (tmp_path / "t" / "ok.txt").write_text("fine", encoding="utf-8")
    stats = ReadStats()
    docs = list(read_source(_src(tmp_path / "t", "text_dir", max_doc_bytes=1000), stats))
    assert [x["text"] for x in docs] == ["fine"]
    assert stats.by_reason == {"empty file": 1, "document too large": 1}


def _pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, written by hand (offsets computed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.mark.parametrize("manifest_kind", ["json", "csv"])
def test_pdf_directory_with_sidecar_license_manifest(tmp_path, manifest_kind):
    d = tmp_path / "pdfs"
    (d / "sub").mkdir(parents=True)
    (d / "a.pdf").write_bytes(_pdf("Hello from the first report."))
    (d / "sub" / "b.pdf").write_bytes(_pdf("A second report with its own license."))
    (d / "c.pdf").write_bytes(_pdf("Nobody said what license this has."))
    (d / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    licenses = {"a.pdf": "CC-BY-4.0", "sub/b.pdf": "CC0-1.0", "broken.pdf": "CC0-1.0"}
    if manifest_kind == "json":
        manifest = tmp_path / "licenses.json"
        manifest.write_text(json.dumps(licenses), encoding="utf-8")
    else:
        manifest = tmp_path / "licenses.csv"
        manifest.write_text("file,license\n" + "".join(f"{k},{v}\n" for k, v in licenses.items()))
    stats = ReadStats()
    docs = list(read_source(_src(d, "pdf_dir", license_manifest=str(manifest)), stats))
    got = {x["id"]: (x["text"], x["license"]) for x in docs}
    assert got == {
        "s/a.pdf": ("Hello from the first report.", "CC-BY-4.0"),
        "s/sub/b.pdf": ("A second report with its own license.", "CC0-1.0"),
    }
    reasons = _by_line(stats)
    assert reasons[("c.pdf", None)].startswith("no license")
    assert reasons[("broken.pdf", None)].startswith(("unreadable PDF", "empty file"))


def test_caps_on_documents_and_estimated_tokens(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"".join(_line(i) for i in range(10)))
    assert len(list(read_source(_src(tmp_path / "a.jsonl", max_docs=3)))) == 3
    # each text is 16 characters = 4 tokens at 4 chars/token: a 10-token cap stops after 3 documents
    capped = list(read_source(_src(tmp_path / "a.jsonl", max_est_tokens=10), chars_per_token=4.0))
    assert len(capped) == 3
