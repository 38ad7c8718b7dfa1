"""Filter quality on real text: what the `vi` and `ja` recipes' chains keep of clean documents, what
they remove of noise, and how fast they run next to datatrove's filter chain.

    python -m benchmarks.filter_quality [--quick]

Input: the real development sample in ../shared/realtext-dev/ (beside the repository; not part of it).
Each set is split by a hash of the document id: about 80 % are measured as clean text, the other 20 %
are held apart as material for the project's seeded noise generator (lm_platform.data.curation.noise).

- Keep rates: every set through the matching recipe's chain (`vi` recipe's `vi` filters for Vietnamese,
  its `en` filters for English; `ja` recipe's `ja` filters for Japanese): documents in, kept, raw keep
  rate, and keep rate among the documents at or above the recipe's minimum length (measured as the length
  filter measures it: on the normalised text).
- Noise recall: per language and noise kind, the share of generated noise documents the chain removes.
- Perplexity across domains: a reference model of one clean domain (ja: Wikipedia leads, en: books,
  vi: Wikipedia) scores a source of another (ja: literature, en: web text, vi: the demo's everyday prose,
  lm_platform/demo/texts/vi.txt); keep rates with the heuristics alone, the reference's absolute
  threshold and the per-source one. RESULT: `domain_gap_<lang>`, the heuristics' keep rate minus the
  per-source threshold's (the largest over the language's sources).
- Perplexity: when KenLM's lmplz is available, each language with a perplexity filter gets a reference
  model trained on the held-apart documents of its reference set (never on measured documents), and
  its absolute threshold applies; otherwise the step is skipped and the table says so.
- Throughput: total documents/s and MB/s per core (CPU time of one process, so that other load on a
  shared machine does not count; median of --rounds, the first being the keep-rate pass) over all
  measured sets, ours against
  datatrove's filters with their per-language settings (`language=`: GopherRepetition, GopherQuality,
  C4Quality, FineWebQuality; datatrove's language filter needs a fastText model download and is left
  out). The chains decide differently (different rules and thresholds), so both keep rates are shown
  side by side: this is not equivalent work, it is what a user gets from either chain on this text.

- Quality model (benchmarks/_quality.py): a model per language trained on held-apart documents (clean
  text against the generator's noise of seed 1), its filter (`min_score`) on the web-like sets only, the
  score distributions of every clean set and noise kind, and the CPU time of scoring every measured
  document as a share of the chain's (RESULT: `quality_cost_share`; `quality_min_auc`, report-only).
  `--no-quality` leaves it out.

RESULT: ours/peer in docs/s; `min_keep` is the lowest keep rate above the minimum length across sets;
`min_noise_recall` the lowest removal rate across noise kinds and languages.

--quick measures up to 100 documents and about 150,000 characters per set (every set stays in) and 12
noise documents per kind. --ours-only is a tuning aid, not a benchmark: our chains alone over the same
sets and noise (about a minute for the full sample), with --show N printing dropped clean documents and
surviving noise; it prints no RESULT line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._quality import QualityBench

# ../shared beside the repository; LM_PLATFORM_SHARED points elsewhere (a git worktree, a CI cache).
SHARED = Path(os.environ.get("LM_PLATFORM_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
REALTEXT = SHARED / "realtext-dev"
# set -> (recipe, language config)
SETS = {
    "vi_wiki": ("vi", "vi"),
    "en_books": ("vi", "en"),
    "en_web": ("vi", "en"),
    "ja_aozora": ("ja", "ja"),
    "ja_aozora_more": ("ja", "ja"),
    "ja_wiki_leads": ("ja", "ja"),
}
# --quick measures at most this many documents per set, and about this many characters (books and
# literature come in 40-50k-character parts), so that it stays under a minute on 2 cores.
QUICK_DOCS = 100
QUICK_CHARS = 150_000
# The set a language's reference model (perplexity) learns from: its held-apart documents only.
REFERENCE_SETS = {
    "vi": ["vi_wiki"],
    "ja": ["ja_aozora", "ja_aozora_more", "ja_wiki_leads"],
    "en": ["en_books", "en_web"],
}


@dataclass
class Doc:
    id: str
    text: str
    set: str = ""


def load_sets(quick: bool) -> tuple[dict[str, list[Doc]], dict[str, list[Doc]]]:
    """(measured documents per set, held-apart documents per language)."""
    from lm_platform.data.curation.noise import held_apart

    if not REALTEXT.is_dir():
        raise SystemExit(
            f"filter_quality: the real development text is not there ({REALTEXT}); it lives in the shared "
            "folder beside the repository (../shared/realtext-dev). Nothing to measure."
        )
    measured: dict[str, list[Doc]] = {}
    apart: dict[str, list[Doc]] = {}
    for name, (_recipe, lang) in SETS.items():
        path = REALTEXT / f"{name}.jsonl"
        if not path.is_file():
            raise SystemExit(f"filter_quality: {path} is missing")
        docs = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
        docs = [Doc(d["id"], d["text"], name) for d in docs]
        keep = [d for d in docs if not held_apart(d.id)]
        if quick:
            mean_chars = sum(len(d.text) for d in keep) / max(len(keep), 1)
            n = max(8, min(QUICK_DOCS, int(QUICK_CHARS / max(mean_chars, 1))))
            keep = keep[:: -(-len(keep) // n)]  # at most n documents, spread over the set
        measured[name] = keep
        apart.setdefault(lang, []).extend(d for d in docs if held_apart(d.id))
    return measured, apart


def chains():
    from lm_platform.data.curation.curate import Curator
    from lm_platform.recipe import load_recipe

    out = {}
    for recipe_name, lang in sorted(set(SETS.values())):
        cfg = load_recipe(recipe_name).languages[lang]
        out[(recipe_name, lang)] = (Curator(lang, cfg), cfg)
    return out


def min_chars(cfg) -> int:
    from lm_platform.recipe.schema import LengthFilter

    found = [f for f in cfg.filters if isinstance(f, LengthFilter)]
    return found[0].min_chars if found else 0


def _train(texts, lang: str, ref_cfg, out: Path):
    from lm_platform.data.curation.reference_lm import train_reference_lm

    # A development-sized model: fewer pieces, and a fifth held out to calibrate the threshold on.
    ref = ref_cfg.model_copy(
        update={"sp_vocab_size": min(ref_cfg.sp_vocab_size, 4000), "heldout_fraction": 0.2}
    )
    return train_reference_lm(texts, out, lang, ref)


def _clean_apart(chain, docs: list[Doc]) -> list[tuple[str, str]]:
    out = []
    for d in docs:
        text, rejected = chain.filter(d.text)
        if rejected is None:
            out.append((d.id, text))
    return out


def reference_models(apart: dict[str, list[Doc]], chain_map, work: Path) -> dict[tuple[str, str], tuple]:
    """(perplexity settings, model directory) per chain, trained on held-apart documents of the language's
    reference sets (never on measured documents); {} when KenLM's programs are not installed. A chain
    whose recipe has no perplexity filter (English in the `vi` recipe) gets the filter's defaults and a
    model of its reference set, so every clean file is measured with perplexity on."""
    from lm_platform.data.curation.reference_lm import KenLMNotFound, kenlm_binary
    from lm_platform.recipe.schema import PerplexityFilter, ReferenceLMConfig

    try:
        kenlm_binary("lmplz")
    except KenLMNotFound as exc:
        print(f"(perplexity step skipped: {exc})")
        return {}
    models = {}
    for (recipe_name, lang), (chain, cfg) in chain_map.items():
        ppl = cfg.perplexity or PerplexityFilter()
        ref_cfg = cfg.reference_lm or ReferenceLMConfig(source="benchmark", order=5, sp_vocab_size=4000)
        held = [d for d in apart[lang] if d.set in REFERENCE_SETS[lang]]
        out = work / f"ref-{recipe_name}-{lang}"
        res = _train(_clean_apart(chain, held), lang, ref_cfg, out)
        models[(recipe_name, lang)] = (ppl, out)
        own = "" if cfg.perplexity is not None else " (the benchmark's: the recipe has no perplexity filter)"
        print(
            f"reference model {recipe_name}/{lang}: {res.docs_train} held-apart docs of "
            f"{'+'.join(REFERENCE_SETS[lang])}, held-out perplexity {res.heldout_perplexity}{own}"
        )
    return models


def source_gate(chain, ppl_cfg, model_dir: Path, lang: str, docs: list[str]):
    """The perplexity gate for one source (a set): calibrated on the source's own documents that pass
    the heuristics, as curation does (`calibrate: source`), or the reference's threshold alone."""
    from lm_platform.data.curation.curate import PerplexityGate

    gate = PerplexityGate(ppl_cfg, model_dir, lang)
    if gate.per_source:
        scores = []
        for text in docs:
            out, rejected = chain.filter(text)
            if rejected is None:
                scores.append(gate.score(out))
        gate.calibrate(scores)
    return gate


# Vietnamese of another clean domain than the dev sample's Wikipedia: the demo's everyday prose (food,
# family, travel, work; written for the project, lm_platform/demo/texts/vi.txt).
VI_OTHER_DOMAIN = "vi_demo_prose"


def domain_check(apart, measured, chain_map, work: Path) -> dict[str, float]:
    """Does the threshold depend on the reference's own domain? A reference of one clean domain (ja:
    Wikipedia leads; en: books; vi: Wikipedia) scores sources of another (ja: literature; en: web text;
    vi: everyday prose): keep rates with the heuristics alone, with the reference's threshold and with
    the per-source one. Returns, per language, the largest gap in points between the heuristics' keep
    rate and the per-source threshold's (`domain_gap_<lang>` on the RESULT line)."""
    from lm_platform.demo.generate import read_paragraphs
    from lm_platform.recipe.schema import PerplexityFilter, ReferenceLMConfig

    print("\nperplexity across domains (reference of one clean domain, sources of another)")
    print(f"{'reference':<16} {'source':<15} {'heuristics':>10} {'reference thr':>13} {'per-source thr':>14}")
    sources = {name: [d.text for d in docs] for name, docs in measured.items()}
    sources[VI_OTHER_DOMAIN] = read_paragraphs("vi")
    gaps: dict[str, float] = {}
    for lang, recipe_name, ref_set, targets in (
        ("ja", "ja", "ja_wiki_leads", ("ja_aozora", "ja_aozora_more")),
        ("en", "vi", "en_books", ("en_web",)),
        ("vi", "vi", "vi_wiki", (VI_OTHER_DOMAIN,)),
    ):
        chain, cfg = chain_map[(recipe_name, lang)]
        ppl = cfg.perplexity or PerplexityFilter()
        ref_cfg = cfg.reference_lm or ReferenceLMConfig(source="benchmark", order=5, sp_vocab_size=4000)
        out = work / f"domain-{lang}"
        _train(_clean_apart(chain, [d for d in apart[lang] if d.set == ref_set]), lang, ref_cfg, out)
        for target in targets:
            texts = sources[target]
            kept_h = [t for t in texts if chain.filter(t)[1] is None]
            row = []
            for mode in ("reference", "source"):
                gate = source_gate(chain, ppl.model_copy(update={"calibrate": mode}), out, lang, texts)
                row.append(sum(gate.check(chain.filter(t)[0]) is None for t in kept_h) / max(len(texts), 1))
            heur = len(kept_h) / max(len(texts), 1)
            gaps[lang] = max(gaps.get(lang, 0.0), heur - row[1])
            print(f"{ref_set:<16} {target:<15} {heur:>10.3f} {row[0]:>13.3f} {row[1]:>14.3f}")
    return gaps


def judge(chain, gate, text: str) -> str | None:
    """The filter that drops `text`, or None when the chain keeps it."""
    out, rejected = chain.filter(text)
    if rejected is not None:
        return rejected[0]
    if gate is not None and gate.check(out) is not None:
        return "perplexity"
    return None


def datatrove_chain(lang: str):
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    filters = [
        GopherRepetitionFilter(language=lang),
        GopherQualityFilter(language=lang),
        C4QualityFilter(language=lang),
        FineWebQualityFilter(language=lang),
    ]
    from datatrove.data import Document

    def run(text: str, i: int) -> bool:
        doc = Document(text=text, id=str(i))
        for f in filters:
            res = f.filter(doc)
            if res is False or (isinstance(res, tuple) and res[0] is False):
                return False
        return True

    run("Warm up the tokenizer. It loads once.", 0)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a subsample of each set, fewer noise docs (< 60 s)")
    ap.add_argument(
        "--rounds", type=int, default=None, help="throughput rounds (default 1: the keep-rate pass, timed)"
    )
    ap.add_argument("--no-perplexity", action="store_true", help="heuristic filters only")
    ap.add_argument("--no-quality", action="store_true", help="no quality model (benchmarks/_quality.py)")
    ap.add_argument(
        "--ours-only",
        action="store_true",
        help="tuning aid: our chains only (no datatrove, no throughput, no RESULT line); keep rates, noise "
        "recall and, with --show, the dropped clean documents and the surviving noise",
    )
    ap.add_argument(
        "--show", type=int, default=0, help="with --ours-only: print up to N examples per set/kind"
    )
    args = ap.parse_args(argv)
    from lm_platform.data.curation.noise import NOISE_TYPES, make_noise
    from lm_platform.data.curation.normalize import normalize_text

    rounds = args.rounds or 1
    n_noise = 12 if args.quick else 80
    measured, apart = load_sets(args.quick)
    chain_map = chains()
    with tempfile.TemporaryDirectory() as tmp:
        models = {} if args.no_perplexity else reference_models(apart, chain_map, Path(tmp))
        # Each set is a source: its perplexity threshold is calibrated on its own documents (as curation
        # does per source); noise is judged under the most lenient threshold of its language's sets.
        gates = {
            name: source_gate(chain_map[key][0], *models[key], key[1], [d.text for d in measured[name]])
            for name, key in SETS.items()
            if key in models
        }
        for name, gate in gates.items():
            print(
                f"  {name}: perplexity threshold {gate.threshold:.1f}"
                + (f" (source median {gate.source_median:.1f})" if gate.source_median else "")
            )
        noise_gates = {}
        for name, key in SETS.items():
            if name in gates and (
                key not in noise_gates or gates[name].threshold > noise_gates[key].threshold
            ):
                noise_gates[key] = gates[name]
        # The quality model per language, its filter on the web-like sets, its scores and cost (_quality.py).
        langs = sorted({lang for _r, lang in SETS.values()})
        qb = None if args.no_quality else QualityBench(apart, langs, n_noise, args.quick)
        print(
            f"\n{'set':<14} {'recipe/lang':<8} {'docs':>5} {'kept':>5} {'keep':>6} {'>=min':>5} "
            f"{'keep>=min':>9} {'datatrove keep':>14}  top reasons (ours)"
        )
        keep_min: dict[str, float] = {}
        shown: dict[str, int] = {}  # --show: examples printed per set / noise kind
        ours_docs = peer_docs = 0
        ours_cpu = peer_cpu = 0.0
        dt_chains = (
            {}
            if args.ours_only
            else {lang: datatrove_chain(lang) for lang in {lang for _r, lang in SETS.values()}}
        )
        for name, (recipe_name, lang) in SETS.items():
            chain, cfg = chain_map[(recipe_name, lang)]
            gate = gates.get(name)
            floor = min_chars(cfg)
            reasons: dict[str, int] = {}
            kept = kept_min = n_min = dt_kept = 0
            for i, d in enumerate(measured[name]):
                # Timed: what the recipe runs (the English chain has no perplexity filter in the `vi`
                # recipe; the benchmark's own perplexity step for it is measured for keep rates only).
                t0 = time.process_time()
                why = judge(chain, gate if cfg.perplexity is not None else None, d.text)
                ours_cpu += time.process_time() - t0
                if why is None and gate is not None and cfg.perplexity is None:
                    why = judge(chain, gate, d.text)
                if qb is not None:
                    why = qb.judge(name, lang, d.text, why is None) or why
                # As the length filter measures it: after normalisation (spaces collapsed, lines stripped).
                long_enough = len(normalize_text(d.text, cfg.unicode_form, cfg.fix_mojibake)) >= floor
                n_min += long_enough
                if why is None:
                    kept += 1
                    kept_min += long_enough
                else:
                    reasons[why] = reasons.get(why, 0) + 1
                    if long_enough and shown.get(name, 0) < args.show:
                        shown[name] = shown.get(name, 0) + 1
                        print(f"  [{name}] dropped by {why}: {d.id} ({len(d.text)} chars) {d.text[:300]!r}")
                if args.ours_only:
                    continue
                t0 = time.process_time()
                dt_kept += dt_chains[lang](d.text, i)
                peer_cpu += time.process_time() - t0
            n = len(measured[name])
            keep_min[name] = kept_min / n_min if n_min else 1.0
            top = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
            print(
                f"{name:<14} {recipe_name + '/' + lang:<8} {n:>5} {kept:>5} {kept / n:>6.3f} {n_min:>5} "
                f"{keep_min[name]:>9.3f} {dt_kept / n:>14.3f}  {top}"
            )
            ours_docs += n
            peer_docs += n

        print(f"\nnoise removal ({n_noise} generated documents per kind and language; held-apart sources)")
        langs = sorted({(r, lang) for r, lang in SETS.values()}, key=lambda x: x[1])
        print(f"{'kind':<22}" + "".join(f"{r + '/' + lang:>10}" for r, lang in langs))
        recall: dict[tuple[str, str], float] = {}
        for kind in NOISE_TYPES:
            row = f"{kind:<22}"
            for recipe_name, lang in langs:
                chain, _cfg = chain_map[(recipe_name, lang)]
                gate = noise_gates.get((recipe_name, lang))
                others = [d.text for other, docs in apart.items() if other != lang for d in docs]
                docs = make_noise(kind, lang, [d.text for d in apart[lang]], n_noise, 0, others)
                if qb is not None:
                    qb.score_noise(kind, lang, docs)
                removed = 0
                for t in docs:
                    if judge(chain, gate, t) is not None:
                        removed += 1
                    elif args.show and shown.get(kind + lang, 0) < args.show:
                        shown[kind + lang] = shown.get(kind + lang, 0) + 1
                        print(f"  [{kind}/{lang}] kept: {t[:300]!r}")
                recall[(kind, lang)] = removed / len(docs)
                row += f"{recall[(kind, lang)]:>10.3f}"
            print(row)

        gaps = domain_check(apart, measured, chain_map, Path(tmp)) if models else {}
        qfields = qb.report(ours_cpu, SETS) if qb is not None else "quality=off"
        if args.ours_only:
            print(
                f"\n(--ours-only: a tuning aid; no datatrove, no throughput, no RESULT line) "
                f"min_keep={min(keep_min.values()):.3f} min_noise_recall={min(recall.values()):.3f} "
                f"worst_noise={min(recall, key=recall.get)}"
                + "".join(f" domain_gap_{lang}={gap:.3f}" for lang, gap in sorted(gaps.items()))
            )
            return 0
        # Throughput over every measured document, both chains, one process each round.
        all_docs = [(name, SETS[name], d.text) for name in SETS for d in measured[name]]
        mb = sum(len(t.encode("utf-8")) for _n, _k, t in all_docs) / 1e6
        ours_rates, peer_rates = [ours_docs / ours_cpu], [peer_docs / peer_cpu]  # round 1: the pass above
        for _ in range(rounds - 1):
            t0 = time.process_time()
            for name, (recipe_name, lang), text in all_docs:
                chain, cfg = chain_map[(recipe_name, lang)]
                judge(chain, gates.get(name) if cfg.perplexity is not None else None, text)
            ours_rates.append(len(all_docs) / (time.process_time() - t0))
            t0 = time.process_time()
            for i, (_name, (_r, lang), text) in enumerate(all_docs):
                dt_chains[lang](text, i)
            peer_rates.append(len(all_docs) / (time.process_time() - t0))
    ours, peer = statistics.median(ours_rates), statistics.median(peer_rates)
    print(
        f"\nthroughput over {len(all_docs):,} documents ({mb:.1f} MB), per core (CPU seconds of this process, "
        f"so other load on the machine does not count): ours {ours:,.1f} docs/s "
        f"({ours * mb / len(all_docs):.2f} MB/s), datatrove {peer:,.1f} docs/s ({peer * mb / len(all_docs):.2f} MB/s)"
    )
    print("(the chains decide differently: keep rates above are side by side, not an agreement)")
    min_keep = min(keep_min.values())
    worst = min(recall, key=recall.get)
    print(
        f"RESULT name=filter_quality ours={ours:.1f} peer={peer:.1f} ratio={ours / peer:.3f} unit=docs/s "
        f"higher_is_better=true min_keep={min_keep:.3f} min_noise_recall={recall[worst]:.3f} "
        f"worst_noise={worst[0]}/{worst[1]} ours_mb_s={ours * mb / len(all_docs):.3f} "
        f"peer_mb_s={peer * mb / len(all_docs):.3f} perplexity={'on' if gates else 'off'} "
        f"docs={len(all_docs)} {qfields}"
        + "".join(f" domain_gap_{lang}={gap:.3f}" for lang, gap in sorted(gaps.items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
