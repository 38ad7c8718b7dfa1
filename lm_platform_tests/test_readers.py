"""Readers: each format gives documents of the fixed schema; bad records are quarantined, not fatal."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lm_platform.data.corpus.documents import DocWriter, doc_meta, iter_docs
from lm_platform.data.corpus.readers import ReadStats, read_source
from lm_platform.recipe.schema import SourceConfig


def src(tmp_path, fmt, **kw) -> SourceConfig:
    base = {
        "name": "s",
        "location": str(tmp_path / "in"),
        "format": fmt,
        "license": "CC0-1.0",
        "language": "en",
    }
    return SourceConfig(**{**base, **kw})


def test_jsonl_plain_and_gzip_with_bad_lines_quarantined(tmp_path):
    (tmp_path / "in").mkdir()
    lines = [
        json.dumps({"id": "a", "text": "first", "extra": 1}),
        "{not json",
        json.dumps({"id": "b", "body": "no text field"}),
        json.dumps(["not", "an", "object"]),
        "",
        json.dumps({"id": "c", "text": "third"}),
    ]
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wb") as fh:
        fh.write(
            json.dumps({"id": "d", "text": "gz"}).encode() + b"\n" + b'{"id": "e", "text": "\xff\xfe"}\n'
        )
    stats = ReadStats()
    docs = list(read_source(src(tmp_path, "jsonl", id_field="id"), stats))
    assert [d["text"] for d in docs] == ["first", "third", "gz"]
    assert [d["id"] for d in docs] == ["s/a", "s/c", "s/d"]
    assert docs[0]["license"] == "CC0-1.0" and docs[0]["lang"] == "en" and doc_meta(docs[0]) == {"extra": 1}
    reasons = {(q["file"].rsplit("/", 1)[-1], q["line"]): q["reason"] for q in stats.quarantined}
    assert reasons[("a.jsonl", 2)].startswith("malformed JSON")
    assert reasons[("a.jsonl", 3)] == "no string field 'text'"
    assert reasons[("a.jsonl", 4)] == "record is not a JSON object"
    assert reasons[("b.jsonl.gz", 2)].startswith("invalid UTF-8")
    assert stats.quarantined_count == 4 and stats.read == 3


def test_parquet_with_field_mapping_and_cap(tmp_path):
    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"key": ["1", "2", "3"], "content": ["x", "y", "z"], "link": ["u1", "u2", "u3"]}),
        tmp_path / "in" / "part.parquet",
    )
    s = src(tmp_path, "parquet", text_field="content", id_field="key", url_field="link", max_docs=2)
    docs = list(read_source(s))
    assert [(d["id"], d["text"], d["url"]) for d in docs] == [("s/1", "x", "u1"), ("s/2", "y", "u2")]


def test_text_dir_and_qa_formatter(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "one.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "in" / "sub" / "two.txt").write_text("world", encoding="utf-8")
    (tmp_path / "in" / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    stats = ReadStats()
    docs = list(read_source(src(tmp_path, "text_dir"), stats))
    assert sorted((d["id"], d["text"]) for d in docs) == [("s/one.txt", "hello"), ("s/sub/two.txt", "world")]
    assert stats.quarantined_count == 1
    (tmp_path / "qa").mkdir()
    (tmp_path / "qa" / "q.jsonl").write_text(
        json.dumps({"title": "T", "question": "Q?", "answers": ["A1", "A2"]}) + "\n", encoding="utf-8"
    )
    qa = SourceConfig(
        name="q",
        location=str(tmp_path / "qa"),
        format="jsonl",
        license="CC0-1.0",
        language="en",
        formatter="qa",
    )
    assert next(read_source(qa))["text"] == "T\n\nQ?\n\nAnswer: A1\n\nAnswer: A2"


def test_hf_datasets_path_on_local_files(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "d.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": f"doc {i}"}) + "\n" for i in range(3)), encoding="utf-8"
    )
    docs = list(read_source(src(tmp_path, "hf", id_field="id")))
    assert [d["text"] for d in docs] == ["doc 0", "doc 1", "doc 2"]


def test_missing_location_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="source location not found"):
        list(read_source(src(tmp_path, "jsonl")))


def test_doc_writer_is_atomic(tmp_path):
    path = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), DocWriter(path) as w:
        w.write(
            {"id": "1", "text": "t", "source": "s", "license": "l", "lang": "en", "url": None, "meta": "{}"}
        )
        raise RuntimeError("killed")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with DocWriter(path, batch_size=2) as w:
        for i in range(5):
            w.write(
                {
                    "id": str(i),
                    "text": "t",
                    "source": "s",
                    "license": "l",
                    "lang": "en",
                    "url": None,
                    "meta": "{}",
                }
            )
    assert [d["id"] for d in iter_docs(path)] == ["0", "1", "2", "3", "4"]


def test_truncated_gzip_is_quarantined_and_later_files_are_read(tmp_path):
    """A .jsonl.gz cut short keeps the documents before the break, quarantines the rest with file and
    line, and the read goes on with the files after it."""
    (tmp_path / "in").mkdir()
    whole = b"".join(json.dumps({"text": f"doc {i} " + "x" * 200}).encode() + b"\n" for i in range(400))
    packed = gzip.compress(whole)
    (tmp_path / "in" / "a.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wb") as fh:
        fh.write(json.dumps({"text": "after the broken file"}).encode() + b"\n")
    stats = ReadStats()
    docs = list(read_source(src(tmp_path, "jsonl"), stats))
    assert docs[-1]["text"] == "after the broken file"
    assert 0 < len(docs) - 1 < 400
    broken = [q for q in stats.quarantined if q["file"].endswith("a.jsonl.gz")]
    assert len(broken) == 1 and broken[0]["reason"].startswith("unreadable file")
    assert broken[0]["line"] == len(docs)  # the first line not read (documents before it were kept)


def test_lone_surrogate_is_quarantined_with_file_and_line(tmp_path):
    """JSON may escape a lone surrogate ("\\ud800"), which no UTF-8 writer accepts: quarantined at read
    time, so the curated Parquet file is still written."""
    (tmp_path / "in").mkdir()
    lines = [
        json.dumps({"text": "fine"}),
        '{"text": "broken \\ud800 here"}',
        '{"text": "fine too", "title": "bad \\udfff meta"}',
        json.dumps({"text": "last"}),
    ]
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = ReadStats()
    docs = list(read_source(src(tmp_path, "jsonl"), stats))
    assert [d["text"] for d in docs] == ["fine", "last"]
    where = {(q["file"].rsplit("/", 1)[-1], q["line"]): q["reason"] for q in stats.quarantined}
    assert where[("a.jsonl", 2)].startswith("invalid Unicode: lone surrogate U+D800")
    assert where[("a.jsonl", 3)].startswith("invalid Unicode: lone surrogate U+DFFF")
    with DocWriter(tmp_path / "out.parquet") as w:
        w.write_all(docs)
    assert [d["text"] for d in iter_docs(tmp_path / "out.parquet")] == ["fine", "last"]
