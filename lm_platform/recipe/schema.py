"""The recipe: everything one language-model project needs, validated at load time.

A recipe names its text sources (with licenses), how each language is normalised and filtered, how the
tokenizer is made, the model, the training stages and the evaluations. Everything downstream is a pure
function of the recipe and its inputs, so a recipe error must surface here, before any work starts.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Literal

from pydantic import Field, model_validator

from lm_platform.recipe.base import NAME_PATTERN, SPDX_PATTERN, _Strict, did_you_mean, unknown

# Curation settings (filters, PII, reference model, per-language config) live in recipe/filters.py, each
# filter's in its own module; re-exported here so that `from lm_platform.recipe.schema import
# LengthFilter` keeps working.
from lm_platform.recipe.filters import (  # noqa: E402, F401
    SCRIPT_LANGS,
    BoilerplateFilter,
    C4Filter,
    DatatroveFilter,
    EncodingFilter,
    FilterConfig,
    FineWebFilter,
    FlaggedWordsFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageConfig,
    LanguageIdFilter,
    LengthFilter,
    PerplexityFilter,
    PiiConfig,
    ProseFilter,
    ReferenceLMConfig,
    ScriptFilter,
    UrlDomainFilter,
    check_language_lm,
)
from lm_platform.recipe.finetune import ExportConfig, FinetuneConfig, MergeConfig, check_finetune
from lm_platform.recipe.licenses import SpdxLicense, not_on_allowlist
from lm_platform.recipe.quality import QualityBucket, QualityModelConfig, SourceQuality, check_quality  # noqa: F401
from lm_platform.recipe.sources import SourceConfig
from lm_platform.recipe.trainer import TrainConfig
from lm_platform.recipe.training import (
    BlendConfig,
    GenerationConfig,
    MixtureSearchConfig,
    ModelConfig,
    PackConfig,
    ProxyConfig,
    StageConfig,
    TargetTerm,
    check_mixture_search,
)


class TokenizerSample(_Strict):
    """The seeded, size-capped sample of the deduplicated sources the tokenizer learns from
    (`lm_platform.tokenization.sample`)."""

    max_chars: int | None = Field(
        50_000_000, gt=0, description="At most this many characters in all (None: every document)"
    )
    max_docs: int | None = Field(None, gt=0, description="At most this many documents in all")
    seed: int = 0
    mixture: dict[str, float] | None = Field(
        None,
        description="Share of the sample per source name (default: one uniform sample of every source; "
        "for 'extend', of the target language's sources)",
    )


class TokenizerConfig(_Strict):
    mode: Literal["train", "extend"] = "train"
    base: str | None = Field(
        None,
        description="Base HF tokenizer when mode is 'extend': a hub id, or a directory (relative to the recipe "
        "when it starts with ./ or ../ or exists beside it)",
    )
    model_type: Literal["bpe", "unigram"] = "bpe"
    vocab_size: int = Field(32000, ge=64)
    character_coverage: float = Field(0.9995, gt=0, le=1)
    byte_fallback: bool = True
    user_defined_symbols: tuple[str, ...] = ()
    max_sentences: int = Field(2_000_000, gt=0)
    seed: int = 0
    language: str | None = Field(
        None,
        description="Target language: what 'extend' learns new tokens from, and where the fertility check "
        "compares the new tokenizer with 'base' (default: every held-out language)",
    )
    extend_multiple: int = Field(
        128,
        gt=0,
        description="'extend': the number of new tokens (vocab_size - base) must be a multiple of this",
    )
    extend_min_frequency: int = Field(5, gt=0, description="'extend' keeps tokens formed this often")
    sample: TokenizerSample = Field(
        default_factory=TokenizerSample,
        description="The training text: a seeded sample of the deduplicated sources under a size cap",
    )
    workers: int = Field(
        2, gt=0, description="Processes tokenizing each source's documents with the final tokenizer (tokens/)"
    )

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data):
        if isinstance(data, dict) and "train_stage" in data:
            raise ValueError(
                "'train_stage' was removed: the tokenizer trains on 'tokenizer.sample', a seeded sample of the "
                "deduplicated sources (a stage's blend now depends on the tokenizer's exact counts)"
            )
        return data

    @model_validator(mode="after")
    def _base_for_extend(self) -> TokenizerConfig:
        if self.mode == "extend" and not self.base:
            raise ValueError("mode 'extend' needs 'base' (the tokenizer to extend)")
        if self.mode == "extend" and not self.language:
            raise ValueError("mode 'extend' needs 'language' (the language whose tokens are added)")
        return self


class ExactDedupConfig(_Strict):
    """Exact dedup on a hash of the normalised text, kept in a persistent index across runs.

    `partitions` splits the index by hash prefix into that many SQLite files (buckets) that `workers`
    processes update in parallel; `index: memory` keeps nothing between runs (tests, one-off jobs)."""

    index: Literal["sqlite", "memory"] = "sqlite"
    partitions: int = Field(16, ge=1, le=256)
    workers: int = Field(1, ge=1)
    batch_docs: int = Field(50_000, gt=0, description="Documents hashed per indexing transaction")


class NearDupConfig(_Strict):
    """MinHash LSH near-duplicate removal across sources; one document kept per cluster by priority.

    Shingles are word n-grams, or character n-grams for languages written without spaces
    (`char_languages`). A pair is a candidate when all `rows` hashes of one of the `bands` agree; with
    `verify: exact` (the default; `true` means the same), a candidate pair joins a cluster only when the
    exact Jaccard similarity of the two documents' shingle sets is at least `threshold`: the candidates'
    texts are read back and shingled again (pairs whose signatures already estimate far less are rejected
    first). `verify: signature` compares the full signatures instead (an estimate: templated short
    documents well under `threshold` pass it), `verify: none` (or `false`) keeps every band collision."""

    enabled: bool = True
    word_ngram: int = Field(5, gt=0)
    char_ngram: int = Field(5, gt=0)
    char_languages: tuple[str, ...] = ("ja", "zh", "th")
    bands: int = Field(14, gt=0)
    rows: int = Field(8, gt=0)
    threshold: float = Field(0.8, gt=0, le=1)
    verify: Literal["exact", "signature", "none"] = "exact"
    seed: int = 1
    workers: int = Field(1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _verify_bool(cls, data):
        """`verify: true/false` (the former boolean) reads as `exact` / `none`."""
        if isinstance(data, dict) and isinstance(data.get("verify"), bool):
            data = {**data, "verify": "exact" if data["verify"] else "none"}
        return data

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


class DedupConfig(_Strict):
    exact: ExactDedupConfig = ExactDedupConfig()
    near: NearDupConfig | None = Field(None, description="MinHash near-dup removal; absent means off")


class DecontaminationConfig(_Strict):
    """Drop training documents that share an n-gram with an evaluation set of the recipe.

    Word n-grams (`ngram`, 13 by default) on lowercased text without punctuation; character n-grams
    (`char_ngram`) for `char_languages`. `evaluations` limits the sets used (default: all). An evaluation
    text shorter than one n-gram is matched whole (a document leaks it when it contains the whole
    normalised text) if it has at least `min_words` words (`min_chars` characters for `char_languages`);
    shorter ones are skipped, so that common phrases do not remove documents.

    Templates are not leaks: an n-gram found in at least `frequent_docs` documents of the source being
    checked (boilerplate, the sentence every article of a family shares) is ignored, and a document is
    removed only when it reproduces at least `min_share` of an evaluation item (the share of the item's
    words covered by n-grams the document shares with it, counted over the words that non-frequent
    n-grams cover), or at least `min_copied_words` words of it (`min_copied_chars` characters for
    `char_languages`: a section copied from a long held-out article). An item made only of frequent
    n-grams is counted as `uninformative` and never matched. A document reproducing at least
    `copy_share` of an item (all of its n-grams) is a copy, not a template: it does not count towards
    that item's n-gram frequencies, so an item copied into many documents is removed from each."""

    enabled: bool = True
    ngram: int = Field(13, gt=0)
    char_ngram: int = Field(25, gt=0)
    min_words: int = Field(8, gt=0, description="Shortest evaluation text (words) matched whole")
    min_chars: int = Field(15, gt=0, description="Shortest evaluation text (characters) matched whole")
    char_languages: tuple[str, ...] = ("ja", "zh", "th")
    evaluations: tuple[str, ...] | None = None
    min_share: float = Field(
        0.5, gt=0, le=1, description="Share of an evaluation item a document must reproduce to be removed"
    )
    frequent_docs: int = Field(
        10, ge=2, description="An n-gram in at least this many of a source's documents is a template, ignored"
    )
    copy_share: float = Field(
        0.8,
        gt=0,
        le=1,
        description="A document reproducing at least this share of an item (all its n-grams) is a copy: it "
        "does not count towards the item's n-grams being a template, so an item copied into many documents "
        "is removed from each",
    )
    min_copied_words: int | None = Field(
        200,
        gt=0,
        description="Words of an item a document may not reproduce, whatever their share (None: off)",
    )
    min_copied_chars: int | None = Field(
        600, gt=0, description="The same in characters, for `char_languages` (None: off)"
    )


EVAL_KINDS = ("perplexity", "multiple_choice", "generation", "lm_eval")


class EvalConfig(_Strict):
    """One benchmark, an `eval/<name>` asset scored per model version.

    - `perplexity`: `location` is JSONL of held-out documents with 'text' and 'lang'.
    - `multiple_choice`: `location` is JSONL of exam items (question, choices, answer, optional subject,
      context); `dev_location` gives `num_fewshot` examples; `prompt_format` picks the prompt shape and `mode`
      scores each choice's text or only its letter.
    - `generation`: `location` is JSONL of prompts ('prompt', optional 'id', 'lang'); greedy and sampled
      outputs are stored per version.
    - `lm_eval`: lm-evaluation-harness tasks named in `tasks`, defined by YAML files under `include_path`
      with local data files.
    The set is a local JSONL file (`format: jsonl`), or a dataset read through the same `datasets` code
    path as `hf` sources (`format: hf`: a hub id, or a local directory of Parquet/JSON files), whose
    records give a text (`text_field`) and its language (`lang_field`, else `language`).
    A version is compared with its predecessor in the stage chain (or with `baseline`); a drop larger
    than `tolerance` (in the score's unit) fails the benchmark's regression check.
    """

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["perplexity", "multiple_choice", "generation", "lm_eval"] = "perplexity"
    location: str | None = Field(
        None, description="JSONL file of the set, or (format hf) a hub id or directory (not used by lm_eval)"
    )
    format: Literal["jsonl", "hf"] = "jsonl"
    text_field: str = "text"
    lang_field: str = "lang"
    hf_config: str | None = None
    hf_split: str = "test"
    stage: str | None = Field(None, description="Score only versions of this stage (default: every version)")
    max_docs: int | None = Field(None, gt=0, description="Use at most this many documents / items / prompts")
    batch_size: int = Field(8, gt=0)
    language: str | None = Field(None, description="Language of items without a 'lang' field")
    prompt_format: Literal["plain", "hellaswag", "vmlu", "m3exam", "jcommonsenseqa"] = Field(
        "plain", description="multiple_choice: the exam's prompt shape"
    )
    mode: Literal["choices", "letter"] = "choices"
    metric: str | None = Field(None, description="multiple_choice: acc (default), acc_norm or acc_bytes")
    dev_location: str | None = Field(None, description="multiple_choice: JSONL of k-shot examples")
    num_fewshot: int = Field(0, ge=0)
    tasks: tuple[str, ...] = Field((), description="lm_eval: task names")
    include_path: str | None = Field(None, description="lm_eval: directory of task YAML files")
    max_new_tokens: int = Field(32, gt=0, description="generation: tokens generated per prompt")
    temperature: float = Field(0.8, gt=0, description="generation: sampling temperature")
    tolerance: float = Field(0.05, ge=0, description="Largest accepted drop from the predecessor's score")
    baseline: str | None = Field(None, description="A model version every version is compared with")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> EvalConfig:
        if self.kind == "lm_eval":
            if not self.tasks:
                raise ValueError("an lm_eval evaluation needs 'tasks'")
            if not self.include_path:
                raise ValueError(
                    "an lm_eval evaluation needs 'include_path' (a directory of local task YAML files)"
                )
        elif not self.location:
            raise ValueError(f"a {self.kind} evaluation needs 'location'")
        if self.kind == "multiple_choice":
            if self.num_fewshot and not self.dev_location:
                raise ValueError("num_fewshot needs 'dev_location' (the dev split the shots come from)")
            allowed = ("acc",) if self.mode == "letter" else ("acc", "acc_norm", "acc_bytes")
            if self.metric is not None and self.metric not in allowed:
                raise ValueError(f"metric '{self.metric}' is not one of {list(allowed)} in {self.mode} mode")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "perplexity"


class Recipe(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seed: int = 0
    languages: dict[str, LanguageConfig]
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    license_allowlist: tuple[SpdxLicense, ...] = Field(
        min_length=1,
        description="SPDX ids a source may carry and still be trained on (sources marked "
        "exclude_from_training are exempt)",
    )
    tokenizer: TokenizerConfig
    model: ModelConfig
    stages: tuple[StageConfig, ...] = Field(min_length=1)
    evaluations: tuple[EvalConfig, ...] = ()
    dedup: DedupConfig = DedupConfig()
    decontamination: DecontaminationConfig | None = None
    generation: GenerationConfig = GenerationConfig()
    finetune: FinetuneConfig | None = None
    merges: tuple[MergeConfig, ...] = ()
    exports: tuple[ExportConfig, ...] = ()

    @model_validator(mode="after")
    def _cross_references(self) -> Recipe:
        """Every reference between sections, each mistake reported (one line each); a stage whose mixture
        names an unknown source is not checked further (what follows would only repeat it)."""
        problems: list[str] = []

        @contextmanager
        def check():
            try:
                yield
            except ValueError as exc:
                problems.append(str(exc))

        names = [s.name for s in self.sources]
        for what, listed in (("sources", names), ("stages", [s.name for s in self.stages])):
            with check():
                _unique(what, listed)
        with check():
            _unique("evaluations", [e.name for e in self.evaluations])
        for i, src in enumerate(self.sources):
            if src.language not in self.languages:
                problems.append(
                    f"sources.{i}.language: '{src.language}' has no entry in 'languages'"
                    + (did_you_mean(src.language, self.languages) or f" (known: {', '.join(self.languages)})")
                )
            if src.license not in self.license_allowlist and not src.exclude_from_training:
                problems.append(
                    f"sources.{i}.license: {not_on_allowlist([src.license])} "
                    f"(allowlist: {', '.join(self.license_allowlist)}); add it to license_allowlist, or mark the "
                    "source 'exclude_from_training: true'"
                )
        excluded = [s.name for s in self.sources if s.exclude_from_training]
        seen: list[str] = []
        for i, stage in enumerate(self.stages):
            unknown_sources = [
                f"stages.{i}.blend.mixture.{src}: " + unknown("source", src, [*names, *stage.blend.groups])
                for src in ([] if stage.blend.recommended else stage.blend.mixture)
                if src not in names and src not in stage.blend.groups
            ]
            problems += unknown_sources
            with check():
                if not unknown_sources:
                    _check_stage_mixture(i, stage, names)
                    for src in stage.blend.mixture_sources():
                        if src in excluded:
                            raise ValueError(
                                f"stages.{i}.blend.mixture: source '{src}' is marked exclude_from_training"
                            )
            if stage.mixture_search is not None:
                problems += check_mixture_search(
                    f"stages.{i}.mixture_search", stage.mixture_search, stage.searched_sources(), self
                )
            if stage.init_from != "model" and stage.init_from not in seen:
                later = stage.init_from in [s.name for s in self.stages]
                problems.append(
                    f"stages.{i}.init_from: '{stage.init_from}' is "
                    + ("a later stage" if later else "not a stage")
                    + f" (a stage starts from 'model' or an earlier stage: {', '.join(['model', *seen])})"
                    + ("" if later else did_you_mean(stage.init_from, ["model", *seen]))
                )
            seen.append(stage.name)
            every = stage.train.checkpoint_every
            if stage.eval_every and every and stage.eval_every % every:
                problems.append(
                    f"stages.{i}.eval_every: {stage.eval_every} is not a multiple of train.checkpoint_every "
                    f"({every}); those steps would never be written"
                )
            if stage.eval_every and not every:
                problems.append(
                    f"stages.{i}.eval_every: needs train.checkpoint_every (no step checkpoints are written)"
                )
        for lang, cfg in self.languages.items():
            with check():
                check_language_lm(lang, cfg, self.sources)
        with check():
            check_quality(self)
        stage_names = [s.name for s in self.stages]
        if self.tokenizer.language is not None and self.tokenizer.language not in self.languages:
            problems.append(
                f"tokenizer.language: '{self.tokenizer.language}' has no entry in 'languages'"
                + did_you_mean(self.tokenizer.language, self.languages)
            )
        for src in self.tokenizer.sample.mixture or {}:
            if src not in names:
                problems.append(f"tokenizer.sample.mixture.{src}: " + unknown("source", src, names))
            elif src in excluded:
                problems.append(f"tokenizer.sample.mixture.{src}: the source is marked exclude_from_training")
        for i, ev in enumerate(self.evaluations):
            if ev.stage is not None and ev.stage not in stage_names:
                problems.append(f"evaluations.{i}.stage: " + unknown("stage", ev.stage, stage_names))
            if ev.language is not None and ev.language not in self.languages:
                problems.append(
                    f"evaluations.{i}.language: '{ev.language}' has no entry in 'languages'"
                    + did_you_mean(ev.language, self.languages)
                )
        if self.decontamination is not None and self.decontamination.evaluations is not None:
            evals = [e.name for e in self.evaluations]
            for j, name in enumerate(self.decontamination.evaluations):
                if name not in evals:
                    problems.append(f"decontamination.evaluations.{j}: " + unknown("evaluation", name, evals))
        with check():
            check_finetune(
                self.finetune,
                self.merges,
                self.exports,
                stage_names,
                list(self.languages),
                self.license_allowlist,
            )
        if problems:
            raise ValueError("\n".join(problems))  # one line per mistake (recipe/errors.py splits them)
        return self

    # Convenience lookups used by the shell and the core alike.
    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)

    def stage(self, name: str) -> StageConfig:
        return next(s for s in self.stages if s.name == name)

    def higher_priority(self, name: str) -> list[SourceConfig]:
        """Sources whose copy of a shared document wins over `name`'s in dedup: a higher priority, or
        the same priority and listed earlier."""
        order = [s.name for s in self.sources]
        me = self.source(name)
        return [
            o
            for o in self.sources
            if o.priority > me.priority
            or (o.priority == me.priority and order.index(o.name) < order.index(name))
        ]

    def tokenizer_sources(self) -> list[SourceConfig]:
        """The sources the tokenizer's training sample is drawn from: those its `sample.mixture` names,
        else, for 'extend', the target language's sources, else every source; never one marked
        `exclude_from_training`."""
        cfg = self.tokenizer
        trained = [s for s in self.sources if not s.exclude_from_training]
        if cfg.sample.mixture:
            return [s for s in trained if s.name in cfg.sample.mixture]
        if cfg.mode == "extend":
            return [s for s in trained if s.language == cfg.language]
        return trained

    def eval_stage(self, ev: EvalConfig) -> StageConfig:
        return self.stage(ev.stage or self.stages[-1].name)

    @property
    def text_evaluation(self) -> EvalConfig | None:
        """The first perplexity-kind evaluation (held-out text per language), or None."""
        return next((e for e in self.evaluations if e.kind == "perplexity"), None)

    @property
    def versions_name(self) -> str:
        """Name of the recipe's dynamic partitions of model versions (instance-wide, so per recipe)."""
        return f"{self.name}_models"


def _check_stage_mixture(i: int, stage: StageConfig, sources: list[str]) -> None:
    """Groups name known sources, each source appears once in the mixture, epoch caps are sane."""
    where = f"stages.{i}.blend"
    blend = stage.blend
    for group, members in blend.groups.items():
        if group in sources:
            raise ValueError(f"{where}.groups.{group}: a group cannot have the name of a source")
        if not members:
            raise ValueError(f"{where}.groups.{group}: a group needs at least one source")
        for src in members:
            if src not in sources:
                raise ValueError(f"{where}.groups.{group}: " + unknown("source", src, sources))
        if blend.recommended or group not in blend.mixture:
            raise ValueError(f"{where}.groups.{group}: the group is not used in the mixture")
    used = blend.mixture_sources()
    twice = sorted({s for s in used if used.count(s) > 1})
    if twice:
        raise ValueError(f"{where}.mixture: sources listed more than once (directly or in groups): {twice}")
    for src, cap in blend.source_max_epochs.items():
        if src not in used:
            raise ValueError(f"{where}.source_max_epochs: '{src}' is not in the stage's mixture")
        if cap < 1:
            raise ValueError(f"{where}.source_max_epochs.{src}: an epoch cap is at least 1, got {cap}")
        if not blend.upsample:
            raise ValueError(f"{where}.source_max_epochs: epoch caps need 'upsample: true'")


def _unique(what: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what}: duplicate names {dupes}")


__all__ = [
    "NAME_PATTERN",
    "LanguageConfig",
    "PiiConfig",
    "ReferenceLMConfig",
    "SPDX_PATTERN",
    "BlendConfig",
    "GenerationConfig",
    "MixtureSearchConfig",
    "ModelConfig",
    "PackConfig",
    "ProxyConfig",
    "Recipe",
    "SourceConfig",
    "StageConfig",
    "TargetTerm",
    "TrainConfig",
]
