"""KenLM reference models and perplexity scores (CCNet-style), offline and per language.

A reference model learns from a high-quality source: its documents (already through the language's
other filters) are lower-cased with digits folded to 0, pre-tokenised by a SentencePiece model trained on
the same text, and counted by KenLM's `lmplz` into an ARPA model that `build_binary` turns into a binary
file. Scores come from the `kenlm` Python module. A user-supplied `.arpa`/`.bin` model works the same
way, with its own SentencePiece model or, without one, the language's words (`split_words`).

`lmplz` and `build_binary` are built from the kenlm source distribution by `make kenlm` (part of
`make install`) into a per-machine cache; `kenlm_binary` finds them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import kenlm

from lm_platform.atomic import atomic_dir
from lm_platform.data.corpus.text import split_words
from lm_platform.data.curation.filters.script import _is_japanese, _is_vietnamese_syllable
from lm_platform.recipe.filters import ReferenceLMConfig

KENLM_VERSION = "0.3.0"
KENLM_BIN_ENV = "LM_PLATFORM_KENLM_BIN"
DEFAULT_KENLM_BIN = Path.home() / ".cache" / "lm_platform" / f"kenlm-{KENLM_VERSION}" / "bin"
MODEL_FILE, SP_FILE, INFO_FILE = "model.bin", "sp.model", "reference_lm.json"

_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"\s+")


class KenLMNotFound(RuntimeError):
    pass


def kenlm_binary(name: str) -> Path:
    """Path of a KenLM program (`lmplz`, `build_binary`): $LM_PLATFORM_KENLM_BIN, then the cache that
    `make kenlm` fills, then PATH."""
    places = [Path(d) for d in (os.environ.get(KENLM_BIN_ENV),) if d] + [DEFAULT_KENLM_BIN]
    for directory in places:
        if (directory / name).is_file() and os.access(directory / name, os.X_OK):
            return directory / name
    found = shutil.which(name)
    if found:
        return Path(found)
    looked = ", ".join(str(p) for p in places)
    raise KenLMNotFound(
        f"KenLM's '{name}' was not found (looked in {looked} and on PATH). `make kenlm` builds it from the "
        f"kenlm {KENLM_VERSION} source distribution (Boost from Debian packages), or set ${KENLM_BIN_ENV} "
        "to a directory holding lmplz and build_binary."
    )


def normalize_line(line: str) -> str:
    """CCNet's normalisation before counting: lower case, digits folded to 0, single spaces."""
    return _SPACES.sub(" ", _DIGITS.sub("0", line.lower())).strip()


def written_in(line: str, lang: str) -> bool:
    """Whether a line has at least one word written the way `lang` is (languages with a script rule:
    Vietnamese letters and tone marks, Japanese kana and kanji); True for other languages."""

    if lang == "vi":
        return any(_is_vietnamese_syllable(w) for w in line.split())
    if lang == "ja":
        return any(_is_japanese(ch) for ch in line)
    return True


def doc_lines(text: str) -> list[str]:
    """A document's non-empty normalised lines: the 'sentences' the model is trained and scored on."""
    return [n for n in (normalize_line(line) for line in text.split("\n")) if n]


class PerplexityScorer:
    """Perplexity of documents under a KenLM model: 10 ** (-log10 P(doc) / tokens), each line scored with
    sentence boundaries and counted with its end-of-sentence token, as CCNet does."""

    def __init__(self, model_path: str | Path, lang: str, sp_model: str | Path | None = None):
        import sentencepiece as spm

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"KenLM model '{self.model_path}' does not exist")
        try:
            self.model = kenlm.Model(str(self.model_path))
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"'{self.model_path}' is not a KenLM .arpa or .bin model: {exc}") from exc
        self.lang = lang
        self.sp = spm.SentencePieceProcessor(model_file=str(sp_model)) if sp_model else None

    @classmethod
    def from_reference(cls, directory: str | Path) -> PerplexityScorer:
        directory = Path(directory)
        if not (directory / INFO_FILE).is_file():
            raise FileNotFoundError(
                f"no reference model in {directory} ({INFO_FILE} is missing): materialize "
                f"reference_lm/{directory.name} first"
            )
        info = json.loads((directory / INFO_FILE).read_text(encoding="utf-8"))
        return cls(directory / MODEL_FILE, info["lang"], directory / SP_FILE)

    def tokens(self, line: str) -> list[str]:
        if self.sp is not None:
            return self.sp.encode(line, out_type=str)
        return split_words(line, self.lang)

    def log10_prob(self, text: str) -> tuple[float, int]:
        """Total log10 probability of the document's lines and how many tokens (with </s>) it counts.
        Lines with no word written the language's way (Vietnamese: no Vietnamese letter or tone mark;
        Japanese: no kana or kanji) are left out: an article's list of English titles, Latin species
        names or a transliterated anthem are not the language the model knows, and scored they put
        clean encyclopedia articles above word salad. A document with no such line scores infinity."""
        total, count = 0.0, 0
        for line in doc_lines(text):
            if not written_in(line, self.lang):  # a list of English titles is not Vietnamese to score
                continue
            pieces = self.tokens(line)
            if pieces:
                total += self.model.score(" ".join(pieces), bos=True, eos=True)
                count += len(pieces) + 1
        return total, count

    def perplexity(self, text: str) -> float:
        total, count = self.log10_prob(text)
        return 10.0 ** (-total / count) if count else math.inf


@dataclass
class ReferenceLMResult:
    lang: str
    source: str
    order: int
    prune: list[int]
    docs_train: int
    docs_heldout: int
    lines: int
    tokens: int
    sp_vocab_size: int
    heldout_perplexity: float | None
    model_bytes: int
    kenlm_version: str = KENLM_VERSION


def in_hash_share(key: str, share: float) -> bool:
    """Whether `key` falls in the first `share` of [0, 1) by its hash: a fixed, seedable coin per key."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def heldout(doc_id: str, fraction: float) -> bool:
    """A document's fixed side of the train/held-out split (hash of its id)."""
    return in_hash_share(doc_id, fraction)


def _run(cmd: list[str], what: str, stdin=None, stdout=None) -> None:
    proc = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


_REQUIRED_CHARS = re.compile(r"smaller than required_chars\. \d+ vs (\d+)")


def _train_sentencepiece(text: Path, prefix: Path, vocab_size: int, seed: int, log) -> None:
    """Unigram SentencePiece on the training text. A script with many characters (Japanese) may need more
    pieces than asked for to cover them: then the vocabulary grows to fit, and the log says so."""
    import sentencepiece as spm

    for _ in range(2):
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(
                input=str(text),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                hard_vocab_limit=False,
                model_type="unigram",
                character_coverage=0.9995,
                input_sentence_size=2_000_000,
                shuffle_input_sentence=True,
                num_threads=os.cpu_count() or 1,
                minloglevel=2,
            )
            return
        except RuntimeError as exc:
            need = _REQUIRED_CHARS.search(str(exc))
            if need is None:
                raise
            grown = int(need.group(1)) + max(64, vocab_size // 4)
            log(
                f"sp_vocab_size {vocab_size} cannot cover the text's {need.group(1)} characters; using {grown}"
            )
            vocab_size = grown
    raise RuntimeError(f"SentencePiece could not be trained on {text}")


def train_reference_lm(
    docs: Iterable[tuple[str, str]],
    out_dir: str | Path,
    lang: str,
    cfg: ReferenceLMConfig,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> ReferenceLMResult:
    """Train a KenLM model on `(id, text)` documents into `out_dir` (model.bin, sp.model,
    reference_lm.json), written as a whole or not at all. Held-out documents (`cfg.heldout_fraction`,
    by id) are left out of training and measure the model's perplexity."""
    import sentencepiece as spm

    log = log or (lambda _msg: None)
    lmplz, build_binary = kenlm_binary("lmplz"), kenlm_binary("build_binary")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent) as work_dir:
        work = Path(work_dir)
        raw, held = work / "train.txt", work / "heldout.txt"
        n_train = n_held = lines = 0
        with raw.open("w", encoding="utf-8") as fr, held.open("w", encoding="utf-8") as fh:
            for doc_id, text in docs:
                if cfg.max_docs is not None and n_train >= cfg.max_docs:
                    break
                is_held = heldout(doc_id, cfg.heldout_fraction)
                body = doc_lines(text)
                if not body:
                    continue
                if is_held:
                    n_held += 1
                    fh.write(json.dumps(text, ensure_ascii=False) + "\n")
                else:
                    n_train += 1
                    lines += len(body)
                    fr.write("\n".join(body) + "\n")
        if n_train == 0:
            raise ValueError(f"reference_lm/{lang}: the source '{cfg.source}' has no document to learn from")
        log(f"reference_lm/{lang}: {n_train:,} documents, {lines:,} lines; training SentencePiece")
        _train_sentencepiece(raw, work / "sp", cfg.sp_vocab_size, seed, log)
        sp = spm.SentencePieceProcessor(model_file=str(work / "sp.model"))
        tokens = 0
        tokenized = work / "train.tok"
        with raw.open(encoding="utf-8") as fr, tokenized.open("w", encoding="utf-8") as ft:
            for line in fr:
                pieces = sp.encode(line.rstrip("\n"), out_type=str)
                tokens += len(pieces)
                ft.write(" ".join(pieces) + "\n")
        log(f"reference_lm/{lang}: {tokens:,} tokens; lmplz -o {cfg.order}")
        arpa = work / "model.arpa"
        cmd = [str(lmplz), "-o", str(cfg.order), "-S", cfg.memory, "-T", str(work), "--discount_fallback"]
        if any(cfg.prune):
            cmd += ["--prune", *map(str, cfg.prune)]
        with tokenized.open("rb") as fin, arpa.open("wb") as fout:
            _run(cmd, "lmplz", stdin=fin, stdout=fout)
        _run([str(build_binary), str(arpa), str(tmp / MODEL_FILE)], "build_binary", stdout=subprocess.DEVNULL)
        shutil.copyfile(work / "sp.model", tmp / SP_FILE)
        scorer = PerplexityScorer(tmp / MODEL_FILE, lang, tmp / SP_FILE)
        total, count = 0.0, 0
        with held.open(encoding="utf-8") as fh:
            for line in fh:
                t, c = scorer.log10_prob(json.loads(line))
                total, count = total + t, count + c
        result = ReferenceLMResult(
            lang=lang,
            source=cfg.source,
            order=cfg.order,
            prune=list(cfg.prune),
            docs_train=n_train,
            docs_heldout=n_held,
            lines=lines,
            tokens=tokens,
            sp_vocab_size=sp.get_piece_size(),
            heldout_perplexity=round(10.0 ** (-total / count), 3) if count else None,
            model_bytes=(tmp / MODEL_FILE).stat().st_size,
        )
        (tmp / INFO_FILE).write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result
