"""Curation throughput: our chain vs a datatrove LocalPipelineExecutor, same documents, same filters.

    python -m benchmarks.curation [--quick]

Equivalent work: the same English JSONL documents go through Gopher repetition, Gopher quality, C4 and
FineWeb with datatrove's default thresholds, in that order, one worker each; both read JSONL and write
the kept documents (datatrove: JSONL, ours: Parquet, zstd). Ours also normalises each text (NFC,
whitespace), which datatrove does not do. Agreement is the share of documents on which the two keep or
drop alike. Each measured run is a subprocess of its own, so its peak RSS is its own; ours is measured
again on 10x the input for `rss_growth` (the 10x peak over the 1x peak).

The documents are built from the demo's English paragraphs (lm_platform/demo/texts/en.txt): prose pages
of several paragraphs, and pages that each rule is meant to catch (repeated lines, lists, short pages,
code, lorem ipsum, navigation and policy lines, ellipses, hashtags).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lm_platform.demo.generate import read_paragraphs

NAV = ["Home", "About us", "Contact", "Sign in", "Share this page", "Next", "Previous", "Menu"]
POLICY = "By using this site you agree to our terms of use and privacy policy."


def _sentences(paragraph: str) -> list[str]:
    return [s if s.endswith(".") else s + "." for s in paragraph.split(". ") if s]


def make_document(rng: random.Random, paras: list[str]) -> str:
    """One web-like page: mostly prose, with a share of each kind of low-quality page."""
    kind = rng.random()
    body = rng.sample(paras, rng.randint(2, 4))
    if kind < 0.45:
        return "\n".join(body)
    if kind < 0.52:  # boilerplate lines around prose: C4 drops the lines, the page stays
        return "\n".join(rng.sample(NAV, 3) + body + [POLICY, "Enable JavaScript to see comments."])
    if kind < 0.58:  # repeated lines
        line = rng.choice(_sentences(body[0]))
        return "\n".join(body[:1] + [line] * rng.randint(4, 12) + body[1:])
    if kind < 0.64:  # a list of short items
        words = " ".join(body).split()
        return "\n".join(" ".join(words[i : i + rng.randint(1, 4)]) for i in range(0, len(words), 4))
    if kind < 0.70:  # too short for Gopher / C4
        return " ".join(_sentences(body[0])[: rng.randint(1, 3)])
    if kind < 0.74:  # code
        return "\n".join(body[:2] + ["Use it as follows: config = {'a': 1}."] + body[2:])
    if kind < 0.77:
        return "\n".join(body + ["Lorem ipsum dolor sit amet, consectetur adipiscing elit."])
    if kind < 0.82:  # lines cut off with ellipses
        return "\n".join(s[: rng.randint(20, 60)] + "..." for p in body for s in _sentences(p))
    if kind < 0.86:  # hashtags
        return "\n".join(body) + "\n" + " ".join(f"#{w.strip('.,')}" for w in body[0].split()[:40])
    if kind < 0.93:  # lines without terminal punctuation
        return "\n".join(s.rstrip(".") for p in body for s in _sentences(p))
    # duplicated paragraphs
    return "\n".join(body + body[:2])


def write_input(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    paras = read_paragraphs("en")
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"d{i:07d}", "text": make_document(rng, paras)}) + "\n")


# ---- the two chains, each run in a child process -------------------------------------------------


def run_ours(inp: Path, out: Path) -> dict:
    from lm_platform.data.corpus.documents import DocWriter, iter_docs
    from lm_platform.data.corpus.readers import read_source
    from lm_platform.data.curation.curate import curate
    from lm_platform.recipe.schema import (
        C4Filter,
        FineWebFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageConfig,
        SourceConfig,
    )

    src = SourceConfig(
        name="bench", location=str(inp), format="jsonl", license="CC0-1.0", language="en", id_field="id"
    )
    cfg = LanguageConfig(
        unicode_form="NFC",
        fix_mojibake=False,
        filters=(GopherRepetitionFilter(), GopherQualityFilter(), C4Filter(), FineWebFilter()),
    )
    t0 = time.perf_counter()
    corpus = out / "corpus.parquet"
    with DocWriter(corpus) as w:  # the corpus asset: JSONL -> Parquet
        w.write_all(read_source(src))
    res = curate(corpus, out / "curated.parquet", out / "excluded.parquet", "en", cfg)
    seconds = time.perf_counter() - t0
    kept = [d["id"].removeprefix("bench/") for d in iter_docs(out / "curated.parquet", columns=["id"])]
    return {"seconds": seconds, "docs": res.docs_in, "kept": kept}


def run_datatrove(inp: Path, out: Path) -> dict:
    import gzip

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    load_word_tokenizer("en").word_tokenize("Warm up the tokenizer.")  # not counted: a one-off load
    pipeline = [
        JsonlReader(str(inp.parent), glob_pattern=inp.name, id_key="id", text_key="text"),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(),
        FineWebQualityFilter(),
        JsonlWriter(str(out / "kept"), output_filename="kept.jsonl.gz"),
    ]
    t0 = time.perf_counter()
    LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(out / "logs")).run()
    seconds = time.perf_counter() - t0
    kept = []
    for f in sorted((out / "kept").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            kept += [json.loads(line)["id"] for line in fh]
    docs = sum(1 for _ in inp.open(encoding="utf-8"))
    return {"seconds": seconds, "docs": docs, "kept": kept}


def child(which: str, inp: str, out: str) -> None:
    result = (run_ours if which == "ours" else run_datatrove)(Path(inp), Path(out))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out, "result.json").write_text(json.dumps(result))


def measure(which: str, inp: Path, work: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{which}-"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.curation", "--child", which, str(inp), str(out)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "result.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small input, two rounds (< 60 s)")
    ap.add_argument("--child", nargs=3, metavar=("WHICH", "INPUT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    n, rounds = (150, 2) if args.quick else (800, 3)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inp, inp10 = work / "docs.jsonl", work / "docs10.jsonl"
        write_input(inp, n)
        write_input(inp10, 10 * n, seed=1)
        print(
            f"{n:,} English documents (10x run: {10 * n:,}); filters: Gopher repetition, Gopher quality, C4, FineWeb"
        )
        print(
            f"{'round':>5} {'ours docs/s':>12} {'datatrove docs/s':>17} {'agreement':>10} {'ours RSS MB':>12}"
        )
        ours_rates, peer_rates, agreements, rss1 = [], [], [], []
        for r in range(rounds):
            ours, peer = measure("ours", inp, work), measure("datatrove", inp, work)
            kept_o, kept_p = set(ours["kept"]), set(peer["kept"])
            ids = [f"d{i:07d}" for i in range(n)]
            agree = sum((i in kept_o) == (i in kept_p) for i in ids) / n
            ours_rates.append(n / ours["seconds"])
            peer_rates.append(n / peer["seconds"])
            agreements.append(agree)
            rss1.append(ours["peak_rss_mb"])
            print(
                f"{r:>5} {ours_rates[-1]:>12,.0f} {peer_rates[-1]:>17,.0f} {agree:>10.4f} {rss1[-1]:>12,.0f}"
            )
        big = measure("ours", inp10, work)
        print(
            f"ours on 10x input: {10 * n / big['seconds']:,.0f} docs/s, peak RSS {big['peak_rss_mb']:,.0f} MB; "
            f"kept {len(ours['kept'])}/{n} (datatrove {len(peer['kept'])}/{n})"
        )
    ours_med, peer_med = statistics.median(ours_rates), statistics.median(peer_rates)
    rss_1x = statistics.median(rss1)
    print(
        f"RESULT name=curation ours={ours_med:.1f} peer={peer_med:.1f} ratio={ours_med / peer_med:.3f} "
        f"unit=docs/s higher_is_better=true agreement={min(agreements):.4f} peak_rss_mb={rss_1x:.0f} "
        f"rss_growth={big['peak_rss_mb'] / rss_1x:.3f} docs={n}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
