"""EEVE vocabulary extension against a continued-BPE reference, on the real SmolLM2 tokenizer.

Input: `../shared/realtext-dev/vi_wiki.jsonl` (real Vietnamese Wikipedia), split into training and
held-out documents by a hash of the document id, and the SmolLM2 tokenizer in
`../shared/fixtures/smollm2-tokenizer/` (../shared is the folder beside the repository; override with
$LM_PLATFORM_SHARED). Nothing is copied into the project.

Ours: `lm_platform.tokenization.eeve.extend_tokenizer`, run in a child process (its own peak RSS).
Peer (the reference, written here and only here): continued BPE in its plainest form. Words are the
base's pre-tokens, each segmented by the base's own BPE; then, the same number of times as the new
tokens we add, the most frequent adjacent pair (ties: smaller token text) among pairs whose result holds
a whole Vietnamese letter and no partial UTF-8 character, seen at least `min_frequency` times, is merged
everywhere. It encodes held-out text by that definition: the base segmentation of each word, then its
merges applied in the order learnt (lowest first), not through an HF tokenizer.

Equivalent work: the same training text, the same base, the same validity rule, `min_frequency` and
number of new tokens. Reported: tokens per word on the held-out part for both (ours / reference =
ratio, lower is better), `changed_non_vi` (probe texts without a Vietnamese letter that ours encodes
differently from the base: must be 0), the changed-token share on French/Portuguese/Spanish text (which
shares letters with Vietnamese), English book chunks changed, seconds and peak RSS of both.

    python -m benchmarks.eeve [--quick]
"""

from __future__ import annotations

import argparse
import difflib
import heapq
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

SHARED = Path(os.environ.get("LM_PLATFORM_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
BASE = SHARED / "fixtures" / "smollm2-tokenizer"
VI = SHARED / "realtext-dev" / "vi_wiki.jsonl"
EN = SHARED / "realtext-dev" / "en_books.jsonl"


def held_out(doc_id: str) -> bool:
    return zlib.crc32(doc_id.encode()) % 10 == 0


def _ours(base: str, texts: list[str], out: str, size: int, min_freq: int, conn) -> None:
    t = time.perf_counter()
    try:
        from lm_platform.tokenization.eeve import extend_tokenizer

        res = extend_tokenizer(base, texts, out, "vi", size, 128, min_freq)
        conn.send((time.perf_counter() - t, res.summary(), res.invariant))
    except BaseException as exc:
        conn.send(exc)
        raise


# --------------------------------------------------------------------------------------------------
# The reference.


def _bytes_of(token: str) -> bytes:
    from lm_platform.tokenization.eeve import token_bytes

    return token_bytes(token, byte_level=True)


def _valid(token: str) -> bool:
    """Whole characters only, and at least one Vietnamese letter outside ASCII."""
    import unicodedata

    from lm_platform.tokenization.language_chars import VI_CHARS

    try:
        text = _bytes_of(token).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return any(c in VI_CHARS for c in unicodedata.normalize("NFC", text))


class Reference:
    """Continued BPE over the base's segmentation, as plainly as it can be written."""

    def __init__(self, backend, texts: list[str], new: int, min_freq: int):
        self.backend = backend
        words: Counter = Counter()
        for text in texts:
            words.update(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(text))
        segs = {w: [t.value for t in backend.model.tokenize(w)] for w in words}
        vocab = set(backend.get_vocab())
        ok: dict[str, bool] = {}

        def valid(tok):
            if tok not in ok:
                ok[tok] = _valid(tok)
            return ok[tok]

        counts: Counter = Counter()
        holders: dict[tuple[str, str], set[str]] = {}
        for w, s in segs.items():
            for p in zip(s, s[1:], strict=False):
                if valid(p[0] + p[1]):
                    counts[p] += words[w]
                    holders.setdefault(p, set()).add(w)
        heap = [(-c, p[0] + p[1], p) for p, c in counts.items()]
        heapq.heapify(heap)
        self.merges: list[tuple[str, str]] = []
        self.added: list[str] = []
        while heap and len(self.added) < new:
            c, _, p = heapq.heappop(heap)
            if counts.get(p) != -c:
                continue
            if -c < min_freq:
                break
            a, b = p
            self.merges.append(p)
            if a + b not in vocab:
                vocab.add(a + b)
                self.added.append(a + b)
            touched = Counter()
            for w in holders.pop(p, set()):
                s = segs[w]
                for q in zip(s, s[1:], strict=False):
                    if valid(q[0] + q[1]):
                        touched[q] -= words[w]
                merged, i = [], 0
                while i < len(s):
                    if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                        merged.append(a + b)
                        i += 2
                    else:
                        merged.append(s[i])
                        i += 1
                segs[w] = merged
                for q in zip(merged, merged[1:], strict=False):
                    if valid(q[0] + q[1]):
                        touched[q] += words[w]
                        holders.setdefault(q, set()).add(w)
            for q, d in touched.items():
                counts[q] += d
                if d and counts[q] > 0:
                    heapq.heappush(heap, (-counts[q], q[0] + q[1], q))
        self.rank = {p: i for i, p in enumerate(self.merges)}

    def count_tokens(self, text: str) -> int:
        n = 0
        for w, _ in self.backend.pre_tokenizer.pre_tokenize_str(text):
            s = [t.value for t in self.backend.model.tokenize(w)]
            while len(s) > 1:
                best = min(
                    ((self.rank[p], i) for i, p in enumerate(zip(s, s[1:], strict=False)) if p in self.rank),
                    default=None,
                )
                if best is None:
                    break
                i = best[1]
                s[i : i + 2] = [s[i] + s[i + 1]]
            n += len(s)
        return n


def _changed_tokens(a: list[int], b: list[int]) -> int:
    same = sum(m.size for m in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
    return len(a) - same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer documents and new tokens (< 60 s)")
    args = ap.parse_args()
    if not (BASE / "tokenizer.json").exists() or not VI.exists():
        sys.exit(
            f"benchmarks.eeve: needs the SmolLM2 tokenizer and real Vietnamese text in {SHARED} "
            f"({BASE} and {VI}); that folder is absent here. Set LM_PLATFORM_SHARED to where it is."
        )
    from tokenizers import Tokenizer

    from lm_platform.tokenization.language_chars import has_language_char
    from lm_platform.tokenization.probe import PROBE_TEXTS, SHARED_LETTER_TEXTS

    docs = [json.loads(line) for line in VI.open(encoding="utf-8") if line.strip()]
    train = [d["text"] for d in docs if not held_out(d["id"])]
    test = [d["text"] for d in docs if held_out(d["id"])]
    new, min_freq = (512, 5) if args.quick else (4096, 5)
    if args.quick:
        train, test = train[:100], test[:30]
    print(
        f"train {len(train)} docs {sum(map(len, train)):,} chars; held-out {len(test)} docs; new tokens {new}"
    )

    with tempfile.TemporaryDirectory() as work:
        out = str(Path(work) / "ours")
        size = Tokenizer.from_file(str(BASE / "tokenizer.json")).get_vocab_size() + new
        parent, child = mp.get_context("spawn").Pipe()
        proc = mp.get_context("spawn").Process(
            target=_ours, args=(str(BASE), train, out, size, min_freq, child)
        )
        proc.start()
        while not parent.poll(1.0):
            if not proc.is_alive():
                sys.exit(f"benchmarks.eeve: our extension's process died (exit code {proc.exitcode})")
        got = parent.recv()
        proc.join()
        if isinstance(got, BaseException):
            sys.exit(f"benchmarks.eeve: our extension failed: {got!r}")
        ours_s, summary, invariant = got
        ours_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        base = Tokenizer.from_file(str(BASE / "tokenizer.json"))
        ours = Tokenizer.from_file(str(Path(out) / "tokenizer.json"))
        print(f"ours: {ours_s:.1f} s, {summary}")

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        ref = Reference(base, train, new, min_freq)
        ref_s = time.perf_counter() - t
        ref_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"reference: {ref_s:.1f} s, {len(ref.added)} new tokens, {len(ref.merges)} merges")
        if len(ref.added) < new:
            print(f"note: the reference found only {len(ref.added)} tokens")

        words = sum(len(t.split()) for t in test)
        base_tpw = sum(len(base.encode(t, add_special_tokens=False).ids) for t in test) / words
        ours_tpw = sum(len(ours.encode(t, add_special_tokens=False).ids) for t in test) / words
        ref_tpw = sum(ref.count_tokens(t) for t in test) / words

        probes = [t for ts in PROBE_TEXTS.values() for t in ts if not has_language_char(t, "vi")]
        if EN.exists():
            en = [json.loads(line)["text"] for line in EN.open(encoding="utf-8") if line.strip()]
            en = [t for t in en[: 8 if args.quick else None] if not has_language_char(t, "vi")]
        else:
            en = []
        changed = [t for t in probes if base.encode(t).ids != ours.encode(t).ids]
        en_changed = sum(base.encode(t).ids != ours.encode(t).ids for t in en)
        latin = [t for ts in SHARED_LETTER_TEXTS.values() for t in ts]
        lat_total = lat_changed = lat_docs = 0
        for text in latin:
            a, b = base.encode(text).ids, ours.encode(text).ids
            lat_total += len(a)
            lat_changed += _changed_tokens(a, b)
            lat_docs += a != b

    print(f"{'':12} {'tokens/word':>12}")
    for name, v in (("base", base_tpw), ("reference", ref_tpw), ("ours", ours_tpw)):
        print(f"{name:12} {v:12.3f}")
    print(
        f"probe texts without a Vietnamese letter: {len(probes)}, changed {len(changed)}; invariant {invariant}"
    )
    print(f"English book chunks: {len(en)}, changed {en_changed}")
    print(f"fr/pt/es: {lat_docs}/{len(latin)} sentences and {lat_changed}/{lat_total} tokens changed")
    print(
        f"RESULT name=eeve ours={ours_tpw:.4f} peer={ref_tpw:.4f} ratio={ours_tpw / ref_tpw:.4f} "
        f"unit=tokens_per_word higher_is_better=false changed_non_vi={len(changed)} "
        f"en_books_changed={en_changed} latin_changed_token_share={lat_changed / lat_total:.4f} "
        f"latin_changed_docs={lat_docs}/{len(latin)} base={base_tpw:.4f} new_tokens={new} "
        f"seconds={ours_s:.1f} peer_seconds={ref_s:.1f} peak_rss_mb={ours_rss:.0f} "
        f"peer_peak_rss_mb={max(ref_rss, before):.0f}"
    )


if __name__ == "__main__":
    main()
