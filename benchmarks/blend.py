"""Blend-and-pack path, three stages over the same sources: tokenize once per source against per-stage
tokenization.

Equivalent work: the same three deduplicated sources (vi, ja, en; documents of 1-4 demo paragraphs), the
same HF tokenizer (the project's SentencePiece BPE export, `tokenizer.json` only, so both paths encode with
the same `tokenizers` code), the same three stages (mixtures and token targets), from deduplicated
documents to packed `seq_len + 1` datasets with BOS/EOS. Ours: `tokens/<source>` once
(data/blending/tokens.py, two worker processes), then per stage an exact blend (a document list) and packing from
the token shards. Peer: the path before blends counted exact tokens, per stage: a blend of the
documents' text by chars-per-token estimates (`benchmarks/_text_blend.py`) and `pack_text`
(`benchmarks/_text_pack.py`), which tokenizes the stage's text again (two worker processes). Throughput: packed tokens written by all three stages over the wall time of the whole path.
Reported with it: how far each path lands from the stages' token targets (`ours_target_error`,
`peer_target_error`: the largest |packed - target| / target over the stages), and `rss_growth`: the peak
RSS of our path on 10x the input over 1x (each in its own process).

    python -m benchmarks.blend [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._text_blend import blend
from benchmarks._text_pack import pack_text
from lm_platform.data.blending.blend import blend_tokens
from lm_platform.data.blending.pack import boundary_tokens, pack_tokens, tokenizer_meta
from lm_platform.data.blending.tokens import tokenize_source
from lm_platform.data.corpus.documents import DocWriter, make_doc
from lm_platform.demo.generate import read_paragraphs
from lm_platform.recipe.schema import TokenizerConfig
from lm_platform.tokenization.sentencepiece_trainer import train_sentencepiece

SEQ_LEN = 512
WORKERS = 2
LANGS = {
    "vi": ("vi_src", "CC-BY-4.0", 1.9),
    "ja": ("ja_src", "CC-BY-SA-4.0", 0.85),
    "en": ("en_src", "CC0-1.0", 2.4),
}
# name -> (mixture, share of all available tokens as the target)
STAGES = {
    "main": ({"vi_src": 0.4, "ja_src": 0.3, "en_src": 0.3}, 0.85),
    "anneal": ({"vi_src": 0.6, "ja_src": 0.2, "en_src": 0.2}, 0.6),
    "long": ({"vi_src": 0.34, "ja_src": 0.33, "en_src": 0.33}, 0.75),
}


def write_sources(base: Path, n_docs: int, seed: int = 0) -> dict[str, Path]:
    rng = random.Random(seed)
    out = {}
    for lang, (name, lic, _) in LANGS.items():
        paras = read_paragraphs(lang)
        path = base / f"{name}.parquet"
        with DocWriter(path) as w:
            for i in range(n_docs):
                text = "\n\n".join(rng.choice(paras) for _ in range(rng.randint(1, 4)))
                w.write(make_doc(f"{name}/{i}", text, name, lic, lang))
        out[name] = path
    return out


def make_tokenizer(work: Path) -> Path:
    full, hf = work / "tok_sp", work / "tokenizer"
    train_sentencepiece(
        (p for lang in LANGS for p in read_paragraphs(lang)), full, TokenizerConfig(vocab_size=8000)
    )
    hf.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (full / f).exists():
            shutil.copy(full / f, hf / f)
    return hf


def targets(tokens_dirs: dict[str, Path], boundary: int) -> dict[str, int]:
    avail = 0
    for d in tokens_dirs.values():
        s = json.loads((d / "summary.json").read_text())
        avail += s["tokens"] + boundary * s["docs"]
    return {st: int(share * avail) for st, (_, share) in STAGES.items()}


def run_ours(sources: dict[str, Path], tok: Path, out: Path, stage_targets: dict[str, int] | None) -> dict:
    t0 = time.perf_counter()
    dirs = {s: out / "tokens" / s for s in sources}
    for s, path in sources.items():
        tokenize_source(path, tok, dirs[s], source=s, workers=WORKERS)
    boundary = boundary_tokens(tokenizer_meta(tok))
    stage_targets = stage_targets or targets(dirs, boundary)
    packed = {}
    for st, (mixture, _) in STAGES.items():
        blend_tokens(
            dirs, mixture, stage_targets[st], out / "blend" / st, seed=f"0:{st}", boundary_tokens=boundary
        )
        index = pack_tokens(out / "blend" / st, dirs, tok, out / "dataset" / st, SEQ_LEN, 0.05, seed=0)
        packed[st] = index["tokens"]
    return {"seconds": time.perf_counter() - t0, "packed": packed, "targets": stage_targets}


def run_peer(sources: dict[str, Path], tok: Path, out: Path, stage_targets: dict[str, int]) -> dict:
    t0 = time.perf_counter()
    cpt = {name: c for name, _, c in LANGS.values()}
    packed = {}
    for st, (mixture, _) in STAGES.items():
        inputs = {s: (path, cpt[s]) for s, path in sources.items()}
        blend(inputs, mixture, stage_targets[st], out / "blend" / st, seed=f"0:{st}")
        index = pack_text(
            out / "blend" / st / "data.parquet", tok, out / "dataset" / st, SEQ_LEN, 0.05, workers=WORKERS
        )
        packed[st] = index["tokens"]
    return {"seconds": time.perf_counter() - t0, "packed": packed, "targets": stage_targets}


def child(which: str, src_dir: str, tok: str, out: str, stage_targets: str) -> None:
    sources = {name: Path(src_dir) / f"{name}.parquet" for name, _, _ in LANGS.values()}
    tgt = json.loads(stage_targets) or None
    fn = run_ours if which == "ours" else run_peer
    result = fn(sources, Path(tok), Path(out), tgt)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["peak_rss_mb"] = max(own, kids)
    Path(out, "result.json").write_text(json.dumps(result))


def measure(which: str, src_dir: Path, tok: Path, work: Path, stage_targets: dict | None) -> dict:
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{which}-"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.blend", "--child", which, str(src_dir), str(tok), str(out),
         json.dumps(stage_targets or {})],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed:\n{proc.stderr[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    shutil.rmtree(out)
    return result


def _error(r: dict) -> float:
    return max(abs(r["packed"][s] - r["targets"][s]) / r["targets"][s] for s in STAGES)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small input, two rounds (< 60 s)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    n, rounds = (300, 2) if args.quick else (3000, 3)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok = make_tokenizer(work)
        src1, src10 = work / "src1", work / "src10"
        src1.mkdir()
        src10.mkdir()
        write_sources(src1, n)
        write_sources(src10, 10 * n, seed=1)
        print(f"3 sources x {n:,} documents (10x run: {10 * n:,} each); 3 stages; seq_len {SEQ_LEN}")
        print(f"{'round':>5} {'ours tok/s':>12} {'peer tok/s':>12} {'ours RSS MB':>12}")
        ours_rates, peer_rates, rss1, errors = [], [], [], {"ours": [], "peer": []}
        stage_targets = None  # from the first run of ours (exact token counts), then the same for every run
        for r in range(rounds):
            order = ["ours", "peer"] if r % 2 == 0 else ["peer", "ours"]
            res: dict[str, dict] = {}
            for which in order:
                res[which] = measure(which, src1, tok, work, stage_targets)
                stage_targets = res[which]["targets"]
            for which in ("ours", "peer"):
                errors[which].append(_error(res[which]))
            ours_rates.append(sum(res["ours"]["packed"].values()) / res["ours"]["seconds"])
            peer_rates.append(sum(res["peer"]["packed"].values()) / res["peer"]["seconds"])
            rss1.append(res["ours"]["peak_rss_mb"])
            print(f"{r:>5} {ours_rates[-1]:>12,.0f} {peer_rates[-1]:>12,.0f} {rss1[-1]:>12,.0f}")
        big = measure("ours", src10, tok, work, None)
        print(
            f"ours on 10x input: {sum(big['packed'].values()) / big['seconds']:,.0f} tokens/s, "
            f"peak RSS {big['peak_rss_mb']:,.0f} MB; target error ours {max(errors['ours']):.4f}, "
            f"peer {max(errors['peer']):.4f}"
        )
    ours, peer = statistics.median(ours_rates), statistics.median(peer_rates)
    rss = statistics.median(rss1)
    print(
        f"RESULT name=blend ours={ours:.0f} peer={peer:.0f} ratio={ours / peer:.3f} unit=tokens/s "
        f"higher_is_better=true stages={len(STAGES)} ours_target_error={max(errors['ours']):.4f} "
        f"peer_target_error={max(errors['peer']):.4f} peak_rss_mb={rss:.0f} "
        f"rss_growth={big['peak_rss_mb'] / rss:.3f} docs={3 * n}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
