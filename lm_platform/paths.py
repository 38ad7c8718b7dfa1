"""Where each asset's files live under the storage root. One place, so shell and core agree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STORAGE_ENV = "LM_PLATFORM_STORAGE"


def default_storage_root() -> Path:
    """$LM_PLATFORM_STORAGE, else `data/` in the project checkout (or the working directory)."""
    env = os.environ.get(STORAGE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    base = checkout if (checkout / "pyproject.toml").exists() else Path.cwd()
    return base / "data"


@dataclass(frozen=True)
class Layout:
    """Paths for one recipe's artifacts: `<root>/<recipe>/<asset kind>/<name>`."""

    root: Path
    recipe: str

    @property
    def base(self) -> Path:
        return self.root / self.recipe

    def corpus(self, source: str) -> Path:
        return self.base / "corpus" / f"{source}.parquet"

    def corpus_shard(self, source: str, shard: str) -> Path:
        """One shard of a source whose read is sharded (`corpus/<source>/<shard>.parquet`)."""
        return self.base / "corpus" / source / f"{shard}.parquet"

    def curated(self, source: str) -> Path:
        return self.base / "curated" / f"{source}.parquet"

    def curated_shard(self, source: str, shard: str) -> Path:
        return self.base / "curated" / source / f"{shard}.parquet"

    def excluded_shard(self, source: str, shard: str) -> Path:
        return self.base / "curated" / source / f"{shard}.excluded.parquet"

    def curated_shards(self, source: str) -> list[Path]:
        """Every curated output file of a source (what dedup reads), in shard order: the shard files of
        a sharded source (`curated/<source>/<shard>.parquet`), else the one file."""
        shard_dir = self.base / "curated" / source
        if shard_dir.is_dir():
            shards = sorted(
                p for p in shard_dir.glob("*.parquet") if not p.name.endswith(".excluded.parquet")
            )
            if shards:
                return shards
        return [self.curated(source)]

    def excluded(self, source: str) -> Path:
        return self.base / "curated" / f"{source}.excluded.parquet"

    def dedup_dir(self) -> Path:
        """The dedup stage's index and intermediate files (exact, minhash, near, figures, ...)."""
        return self.base / "dedup"

    def deduped(self, source: str) -> Path:
        return self.base / "deduped" / f"{source}.parquet"

    def reference_lm(self, lang: str) -> Path:
        return self.base / "reference_lm" / lang

    def quality_model(self, lang: str) -> Path:
        return self.base / "quality_model" / lang

    def blend(self, stage: str) -> Path:
        return self.base / "blend" / stage

    def tokens(self, source: str) -> Path:
        """A source's documents tokenized once with the final tokenizer (data/blending/tokens.py)."""
        return self.base / "tokens" / source

    def tokenizer(self) -> Path:
        return self.base / "tokenizer"

    def dataset(self, stage: str) -> Path:
        return self.base / "dataset" / stage

    def checkpoint(self, stage: str) -> Path:
        return self.base / "checkpoint" / stage

    # --- Training jobs, model versions and evaluations (one block: every path under checkpoint/*.job.json,
    # models/ and eval/ that the platform writes is made here) ---

    def train_job(self, stage: str) -> Path:
        """The stage's `TrainJob` (JSON) that its trainer launch names."""
        return self.base / "checkpoint" / f"{stage}.job.json"

    def run_dir(self, stage: str) -> Path:
        """The stage's run: step checkpoints, log, preemption record (the trainer's `run_dir`)."""
        return self.base / "checkpoint" / f"{stage}.run"

    def adapters(self) -> Path:
        """Every `adapter(name)` lies in here."""
        return self.base / "adapter"

    def merges(self) -> Path:
        """Every `merged(name)` lies in here."""
        return self.base / "merged"

    def model_snapshot(self, key: str) -> Path:
        """A kept step checkpoint registered as a model version (`<stage>@step_<N>`), snapshotted."""
        return self.base / "models" / key

    def superseded_snapshots(self) -> Path:
        """Where the step snapshots of a retrained run are moved aside."""
        return self.base / "models" / ".superseded"

    def eval_results(self, benchmark: str) -> Path:
        """The benchmark's current scores, one `<version>.json` per model version."""
        return self.base / "eval" / benchmark

    def eval_result(self, benchmark: str, version: str) -> Path:
        return self.eval_results(benchmark) / f"{version}.json"

    def eval_history(self, benchmark: str) -> Path:
        """The benchmark's superseded scores (scores of weights their version no longer names)."""
        return self.base / "eval" / "history" / benchmark

    def leaderboard(self) -> Path:
        return self.base / "eval" / "leaderboard.json"

    def leaderboard_plot(self) -> Path:
        return self.base / "eval" / "leaderboard.png"

    def mixture_search(self, stage: str) -> Path:
        """A stage's mixture search: its candidates, one folder per proxy, the recommendation."""
        return self.base / "mixture" / stage

    def mixture_proxy(self, stage: str, name: str) -> Path:
        """One proxy of the search: its blend, dataset, trained model and score."""
        return self.mixture_search(stage) / name

    # --- end of the block ---

    def model_ref(self, ref: str) -> Path:
        """A fine-tuning model reference (`checkpoint/<stage>`, `adapter/<set>`, `merged/<name>`, or an
        absolute path) as a directory."""
        return Path(ref) if ref.startswith("/") else self.base / ref

    def adapter(self, name: str) -> Path:
        return self.base / "adapter" / name

    def merged(self, name: str) -> Path:
        return self.base / "merged" / name

    def export(self, name: str) -> Path:
        return self.base / "export" / name
