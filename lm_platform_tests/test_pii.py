"""PII redaction: e-mails, IP addresses, Vietnamese and Japanese phone numbers become placeholders and
are counted; ordinary numbers stay."""

from __future__ import annotations

from lm_platform.data.curation.normalize import fix_mojibake, normalize_text
from lm_platform.data.curation.pii import PiiCounts, Redactor
from lm_platform.demo.generate import read_paragraphs, sloppy_cp1252
from lm_platform.recipe.schema import PiiConfig


def test_emails_and_ips_are_redacted_and_counted():
    r, counts = Redactor(PiiConfig()), PiiCounts()
    text = "Write to an.nguyen+news@example.com.vn or admin@site.org; server 192.168.1.20 and fe80:0:0:0:0:0:0:1."
    out = r.redact(text, counts)
    assert out == "Write to <EMAIL> or <EMAIL>; server <IP> and <IP>."
    assert (counts.emails, counts.ip_addresses, counts.docs_changed) == (2, 2, 1)


def test_vietnamese_and_japanese_phones_are_redacted():
    r, counts = Redactor(PiiConfig()), PiiCounts()
    vi = "Liên hệ 0912 345 678, 0912.345.678, +84 912 345 678 hoặc (028) 3822 1234."
    ja = "お問い合わせは03-1234-5678、携帯090-1234-5678、または+81 3-1234-5678まで。"
    out_vi, out_ja = r.redact(vi, counts), r.redact(ja, counts)
    assert out_vi.count("<PHONE>") == 3 and "0912" not in out_vi
    assert out_ja.count("<PHONE>") == 3 and "1234" not in out_ja
    assert counts.phones == 6


def test_ordinary_numbers_stay():
    r, counts = Redactor(PiiConfig()), PiiCounts()
    text = (
        "In 2023 the price rose 12.5% to 1,250,000 đồng; ISBN 978-4-06-123456-7; version 1.2.3.4.5; 3.14159."
    )
    assert r.redact(text, counts) == text
    assert counts.as_dict() == {"emails": 0, "ip_addresses": 0, "phones": 0, "docs_changed": 0}


def test_switched_off_kinds_are_left_alone():
    r = Redactor(PiiConfig(emails=False, phones=()))
    assert r.redact("a@b.com 10.0.0.1 0912345678") == "a@b.com <IP> 0912345678"


def test_normalisation_repairs_mojibake_with_ftfy():
    for lang in ("vi", "ja"):
        text = read_paragraphs(lang)[3]
        broken = sloppy_cp1252(text)
        assert fix_mojibake(broken) == text
        assert normalize_text(broken, "NFC", repair_mojibake=True) == normalize_text(text, "NFC")
    assert fix_mojibake("café naïve — “quoted”") == "café naïve — “quoted”"
