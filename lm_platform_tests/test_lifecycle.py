"""A season of a trimmed demo on one storage and one instance: the runs after the first.

Events, in order: a fresh run; the same run again; new documents appended to one source; a filter threshold
edited; a source's priority changed; both stage datasets changed in one automation tick (training
conditions evaluated with `dg.evaluate_automation_conditions`, no daemon); a stage retrained (its training
settings edited); the nightly evaluation tick; a source removed. Each event is run as `make demo` runs:
`defs.plan.run_stale`, in waves, of the missing and stale assets (here in-process).

After each event (`_check`):
1. Dagster's staleness is the truth: before the event runs, exactly the assets its change touches show
   stale; after it, none does, and for every asset its recorded code version and input data versions
   equal the current ones, and the data versions of datasets and checkpoints equal their files' content.
2. Every checkpoint's recorded parent weights and dataset equal the current parent's and dataset's.
3. Every score's recorded weights equal the weights its version names now.
4. Nothing is deleted without a message: a retrained stage's earlier runs are moved aside, superseded
   scores are in the history; documents in = kept + removed by a filter; blend tokens = dataset tokens.
5. Exactly the expected assets ran again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from lm_platform_tests.conftest import write_demo_variant
from lm_platform_tests.test_reproducible_runs import _trim

pytestmark = pytest.mark.slow

SOURCES = ("vi_news", "ja_wiki", "en_books", "en_web")
NOT_EVAL = "not group:evaluation"
CODE_VERSION_TAG = "dagster/code_version"
INPUT_TAG = "dagster/input_data_version/"
FIRST_DOCS = 60  # vi_news starts with its first 60 lines; 20 more are appended later


def _downstream_of_source(src: str) -> set[str]:
    return {f"corpus/{src}", f"curated/{src}", f"exact_dedup/{src}", f"minhash/{src}", f"deduped/{src}"}


class Season:
    """One storage, one persistent instance, a recipe file edited between events."""

    def __init__(self, tmp: Path, monkeypatch) -> None:
        from lm_platform.recipe.loader import BUNDLED_DIR

        self.tmp = tmp
        lines = (BUNDLED_DIR / "demo_data" / "vi_news.jsonl").read_text(encoding="utf-8").splitlines(True)
        self.more_vi = lines[FIRST_DOCS : FIRST_DOCS + 20]
        self.vi_file = tmp / "sources" / "vi_news.jsonl"
        self.vi_file.parent.mkdir()
        self.vi_file.write_text("".join(lines[:FIRST_DOCS]), encoding="utf-8")

        def mutate(raw: dict) -> None:
            for section in ("finetune", "merges", "exports"):
                raw.pop(section, None)
            _trim(raw)
            raw["sources"][0]["location"] = str(self.vi_file)
            raw["sources"][0].pop("max_docs", None)
            raw["stages"][0]["eval_every"] = 10
            raw["evaluations"] = [e for e in raw["evaluations"] if e["name"] in ("perplexity", "exam_vi")]

        self.recipe_file = write_demo_variant(tmp, mutate, "season.yaml")
        self.storage = tmp / "data"
        monkeypatch.setenv("LM_PLATFORM_STORAGE", str(self.storage))
        monkeypatch.setenv("LM_PLATFORM_RECIPE", str(self.recipe_file))
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
        (tmp / "home").mkdir()
        self.instance = dg.DagsterInstance.local_temp(str(tmp / "home"))
        self.load()

    # -- the recipe and the definitions ------------------------------------------------------------------

    def edit(self, change) -> None:
        raw = yaml.safe_load(self.recipe_file.read_text(encoding="utf-8"))
        change(raw)
        self.recipe_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        self.load()

    def load(self) -> None:
        from lm_platform.defs.deployment import build_deployment_definitions
        from lm_platform.deployment.profile import Profile
        from lm_platform.recipe import load_recipe

        # The local profile; its storage root is $LM_PLATFORM_STORAGE (self.storage).
        self.recipe = load_recipe(str(self.recipe_file))
        self.defs = build_deployment_definitions(self.recipe, Profile(), prefix=[])
        self.graph = self.defs.resolve_asset_graph()
        self.base = self.storage / self.recipe.name

    # -- running -----------------------------------------------------------------------------------------

    def execute(self, keys: list[dg.AssetKey], partition: str | None = None) -> bool:
        result = dg.materialize(
            list(self.defs.assets),
            selection=keys,
            instance=self.instance,
            resources=self.defs.resources,
            partition_key=partition,
            raise_on_error=False,
        )
        return result.success

    def stale(self, selection: str = NOT_EVAL, partition: str | None = None) -> set[str]:
        from lm_platform.defs.plan import plan

        return {p.key.to_user_string() for p in plan(self.defs, self.instance, selection, partition)}

    def run(self, selection: str = NOT_EVAL, partition: str | None = None, force: bool = False) -> set[str]:
        """`make demo`'s step: the missing and stale assets in waves; the keys materialized."""
        from lm_platform.defs.plan import run_stale

        waves = run_stale(self.defs, self.instance, selection, self.execute, partition, force)
        return {p.key.to_user_string() for wave in waves for p in wave}

    def event(self, name: str, expected: set[str], change=None) -> None:
        """Apply `change`, check that exactly the assets it touches show stale (more show stale only once
        those ran with new data versions), run, and check the season's invariants."""
        if change is not None:
            change()
        before = self.stale()
        ran = self.run()
        print(f"EVENT {name}: stale before {sorted(before)}\n   ran {sorted(ran)}")
        if expected is not None:
            assert before <= expected, (
                f"{name}: stale before {sorted(before)}, expected in {sorted(expected)}"
            )
            assert ran == expected, f"{name}: ran {sorted(ran)}\nexpected {sorted(expected)}"
        self.check(name)
        return before, ran

    # -- the invariants ------------------------------------------------------------------------------------

    def latest(self, key: dg.AssetKey, partition: str | None = None):
        return self.instance.get_latest_materialization_event(key) if partition is None else None

    def check(self, name: str) -> None:
        from lm_platform.defs.plan import plan

        assert not plan(self.defs, self.instance, NOT_EVAL), f"{name}: stale after the run"
        self._fresh_means_current(name)
        self._checkpoints_trained_from_current(name)
        self._scores_of_current_weights(name)
        self._counts_add_up(name)

    def _fresh_means_current(self, name: str) -> None:
        from lm_platform.training.train import RUN_RECORD_FILES
        from lm_platform.versions import content_version

        layout_ds = self.base / "dataset"
        for key in dg.AssetSelection.from_string(NOT_EVAL).resolve(self.graph):
            event = self.instance.get_latest_materialization_event(key)
            assert event is not None, f"{name}: {key.to_user_string()} never materialized"
            tags = event.asset_materialization.tags
            node = self.graph.get(key)
            assert tags.get(CODE_VERSION_TAG) == node.code_version, (
                f"{name}: {key} fresh with an old code version"
            )
            for dep in node.parent_keys:
                dep_event = self.instance.get_latest_materialization_event(dep)
                recorded = tags.get(INPUT_TAG + dep.to_user_string())
                current = dep_event.asset_materialization.tags.get(DATA_VERSION_TAG)
                assert recorded == current, (
                    f"{name}: {key} fresh, but recorded {dep} at {recorded}, now {current}"
                )
            kind, _, stage = key.to_user_string().partition("/")
            if kind == "dataset":
                assert tags[DATA_VERSION_TAG] == content_version(layout_ds / stage), (
                    f"{name}: {key} vs its files"
                )
            if kind == "checkpoint":
                out = self.base / "checkpoint" / stage
                assert tags[DATA_VERSION_TAG] == content_version(out, exclude=RUN_RECORD_FILES), (
                    f"{name}: {key} vs its files"
                )

    def _checkpoints_trained_from_current(self, name: str) -> None:
        from lm_platform.evaluation.versions import weights_hash
        from lm_platform.training.checkpoint import read_trained_from

        for st in self.recipe.stages:
            got = read_trained_from(self.base / "checkpoint" / st.name)
            index = (self.base / "dataset" / st.name / "index.json").read_bytes()
            assert got["dataset"] == hashlib.sha256(index).hexdigest()[:16], f"{name}: {st.name}'s dataset"
            parent = (
                None if st.init_from == "model" else weights_hash(self.base / "checkpoint" / st.init_from)
            )
            assert got["parent_weights"] == parent, f"{name}: {st.name} trained from other parent weights"

    def _scores_of_current_weights(self, name: str) -> None:
        from lm_platform.evaluation.versions import version_weights

        for ev in self.recipe.evaluations:
            d = self.base / "eval" / ev.name
            for f in sorted(d.rglob("*.json")) if d.is_dir() else []:
                version = str(f.relative_to(d).with_suffix(""))
                recorded = json.loads(f.read_text())["weights"]
                assert recorded == version_weights(self.base, version), (
                    f"{name}: {ev.name}/{version} is stale"
                )

    def _counts_add_up(self, name: str) -> None:
        for src in self.recipe.sources:
            meta = self.instance.get_latest_materialization_event(
                dg.AssetKey(["curated", src.name])
            ).asset_materialization.metadata
            removed = sum(meta["excluded_by_filter"].value.values())
            assert meta["docs_in"].value == meta["docs_out"].value + removed, f"{name}: {src.name} docs"
        for st in self.recipe.stages:
            manifest = json.loads((self.base / "blend" / st.name / "manifest.json").read_text())
            index = json.loads((self.base / "dataset" / st.name / "index.json").read_text())
            taken = sum(s["taken_tokens"] for s in manifest["sources"])
            assert taken == index["tokens"], (
                f"{name}: blend/{st.name} {taken} tokens, dataset {index['tokens']}"
            )

    def runs_aside(self, stage: str) -> int:
        aside = self.base / "checkpoint" / f"{stage}.run" / "aside"
        return len(list(aside.iterdir())) if aside.is_dir() else 0


def test_a_season_of_runs_keeps_lineage_true(tmp_path, monkeypatch):
    season = Season(tmp_path, monkeypatch)
    everything = {k.to_user_string() for k in dg.AssetSelection.from_string(NOT_EVAL).resolve(season.graph)}

    # A fresh run, then the demo's scores of the last stage.
    season.event("fresh run", everything)
    assert season.run('group:evaluation and not key:"eval/leaderboard"', partition="anneal")
    season.check("fresh run, scored")

    # The same run again: nothing.
    season.event("same run again", set())

    # New documents appended to one source.
    def append():
        with season.vi_file.open("a", encoding="utf-8") as f:
            f.writelines(season.more_vi)
        season.load()

    season.event("documents appended to vi_news", None, append)

    # A filter threshold edited (Japanese: the tokenizer learns from Vietnamese only).
    def threshold(raw):
        length = next(f for f in raw["languages"]["ja"]["filters"] if f["name"] == "length")
        length["min_chars"] = 180

    season.event("ja length threshold edited", None, lambda: season.edit(threshold))

    # A source's priority changed.
    def priority(raw):
        next(s for s in raw["sources"] if s["name"] == "en_web")["priority"] = 5

    season.event("en_web priority raised", None, lambda: season.edit(priority))

    # Both stage datasets changed in one automation tick.
    tick = dg.evaluate_automation_conditions(defs=season.defs, instance=season.instance)
    assert tick.total_requested == 0

    def reseed(raw):
        for st in raw["stages"]:
            st["pack"]["seed"] = 99

    season.edit(reseed)
    assert season.run('key:"dataset/*"') == {"dataset/main", "dataset/anneal"}
    requested = []
    for _ in range(4):
        tick = dg.evaluate_automation_conditions(
            defs=season.defs, instance=season.instance, cursor=tick.cursor
        )
        keys = [r.key for r in tick.results if r.true_subset.size]
        requested.append(sorted(k.to_user_string() for k in keys))
        if keys:
            assert season.execute(keys)
    print("TICKS", requested)
    season.event("both datasets changed, automation", None)

    # A stage retrained (its settings edited).
    def lr(raw):
        raw["stages"][1]["train"]["lr"] = 1.0e-3

    season.event("anneal retrained", None, lambda: season.edit(lr))

    # The nightly evaluation tick.
    from lm_platform.defs import automation

    requests = automation.unscored_requests(season.recipe, season.instance, (), season.base)
    print("NIGHTLY", sorted((r.asset_selection[0].to_user_string(), r.partition_key) for r in requests))
    for r in requests:
        assert season.execute(list(r.asset_selection), r.partition_key)
    assert automation.unscored_requests(season.recipe, season.instance, (), season.base) == []
    assert season.run('key:"eval/leaderboard"') == {"eval/leaderboard"}
    season.check("nightly tick")

    # A source removed.
    def remove(raw):
        raw["sources"] = [s for s in raw["sources"] if s["name"] != "en_web"]
        mixture = raw["stages"][0]["blend"]["mixture"]
        mixture["en_books"] += mixture.pop("en_web")

    season.event("en_web removed", None, lambda: season.edit(remove))
