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

from lm_platform.paths import Layout
from lm_platform_tests.conftest import write_demo_variant
from lm_platform_tests.test_reproducible_runs import _trim

pytestmark = pytest.mark.slow

SOURCES = ("vi_news", "ja_wiki", "en_books", "en_web")
NOT_EVAL = "not group:evaluation"
CODE_VERSION_TAG = "dagster/code_version"
INPUT_TAG = "dagster/input_data_version/"
FIRST_DOCS = 60  # vi_news starts with its first 60 lines; 20 more are appended later


def keys(kind: str, *names: str) -> set[str]:
    return {f"{kind}/{n}" for n in (names or SOURCES)}


# Both stages' blend, dataset and checkpoint, and the model versions they register.
TRAINING = (
    keys("blend", "main", "anneal") | keys("dataset", "main", "anneal") | keys("checkpoint", "main", "anneal")
)
TRAINING |= {"model_versions"}


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
        self.trained: dict[str, int] = {}
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
        self.layout = Layout(self.storage, self.recipe.name)

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

    def event(self, name: str, stale: set[str], ran: set[str], change=None) -> None:
        """Apply `change`; exactly the assets it touches show stale (what lies below them shows stale
        only once they ran and came out with new data versions); run; exactly `ran` ran; the invariants."""
        if change is not None:
            change()
        before = self.stale()
        assert before == stale, f"{name}: stale before the run {sorted(before)}, expected {sorted(stale)}"
        got = self.run()
        assert got == ran, f"{name}: ran {sorted(got)}\nexpected {sorted(ran)}"
        for key in ran:
            kind, _, stage = key.partition("/")
            if kind == "checkpoint":
                self.trained[stage] = self.trained.get(stage, 0) + 1
        self.check(name)

    # -- the invariants ------------------------------------------------------------------------------------

    def check(self, name: str) -> None:
        from lm_platform.defs.plan import plan

        assert not plan(self.defs, self.instance, NOT_EVAL), f"{name}: stale after the run"
        self._fresh_means_current(name)
        self._checkpoints_trained_from_current(name)
        self._scores_of_current_weights(name)
        self._counts_add_up(name)
        self._runs_moved_aside(name)

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
                assert recorded == version_weights(self.layout, version), (
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

    def _runs_moved_aside(self, name: str) -> None:
        """A stage trained n times has its n - 1 earlier runs moved aside (beyond keep_aside the trainer
        removes the oldest with a message, but never their kept checkpoints: main keeps its eval_every
        steps, so all its earlier runs stay)."""
        for st in self.recipe.stages:
            aside = self.base / "checkpoint" / f"{st.name}.run" / "aside"
            n = len(list(aside.iterdir())) if aside.is_dir() else 0
            earlier = self.trained.get(st.name, 0) - 1
            expected = earlier if st.eval_every else min(earlier, st.train.keep_aside)
            assert n == expected, f"{name}: {st.name} has {n} runs aside, expected {expected}"


def test_a_season_of_runs_keeps_lineage_true(tmp_path, monkeypatch):
    from lm_platform.defs import automation
    from lm_platform.evaluation.versions import current_result, history, version_weights

    season = Season(tmp_path, monkeypatch)
    everything = {k.to_user_string() for k in dg.AssetSelection.from_string(NOT_EVAL).resolve(season.graph)}
    evals = 'group:evaluation and not key:"eval/leaderboard"'
    benchmarks = [ev.name for ev in season.recipe.evaluations]

    # A fresh run, then the demo's scores of the last stage.
    season.event("fresh run", everything, everything)
    assert season.run(evals, partition="anneal") == {f"eval/{b}" for b in benchmarks}
    scored = {b: current_result(season.layout, b, "anneal")["weights"] for b in benchmarks}

    # The same run again: nothing is stale, nothing runs.
    season.event("same run again", set(), set())
    assert season.run(evals, partition="anneal") == set()

    # New documents appended to one source: its corpus shows stale (the files' stamp is in its code
    # version); the exact-dedup index and the tokenizer (learnt on Vietnamese) carry the change on.
    def append():
        with season.vi_file.open("a", encoding="utf-8") as f:
            f.writelines(season.more_vi)
        season.load()

    season.event(
        "documents appended to vi_news",
        {"corpus/vi_news"},
        {"corpus/vi_news", "curated/vi_news", "near_duplicates", "tokenizer"}
        | keys("exact_dedup", "vi_news", "ja_wiki", "en_web")
        | keys("minhash", "vi_news", "ja_wiki", "en_web")
        | keys("deduped")
        | keys("tokens")
        | TRAINING,
        append,
    )
    # anneal was retrained: its scores moved to the history (registering the new weights), none deleted
    for bench in benchmarks:
        assert current_result(season.layout, bench, "anneal") is None
        (old,) = history(season.layout, bench, "anneal")
        assert old["weights"] == scored[bench] != version_weights(season.layout, "anneal")

    # A filter threshold edited: the Japanese source's curation and what its new output reaches; the
    # tokenizer and the other sources' tokens stay.
    def threshold(raw):
        length = next(f for f in raw["languages"]["ja"]["filters"] if f["name"] == "length")
        length["min_chars"] = 180

    season.event(
        "ja length threshold edited",
        {"curated/ja_wiki"},
        {"curated/ja_wiki", "near_duplicates", "tokens/ja_wiki"}
        | keys("exact_dedup", "ja_wiki", "en_web")
        | keys("minhash", "ja_wiki", "en_web")
        | keys("deduped")
        | TRAINING,
        lambda: season.edit(threshold),
    )

    # A source's priority changed: the dedup order (not the corpus or its curation).
    def priority(raw):
        next(s for s in raw["sources"] if s["name"] == "en_web")["priority"] = 5

    season.event(
        "en_web priority raised",
        keys("exact_dedup") | {"near_duplicates"},
        keys("exact_dedup")
        | keys("minhash")
        | {"near_duplicates"}
        | keys("deduped")
        | keys("tokens", "en_books", "en_web")
        | TRAINING,
        lambda: season.edit(priority),
    )

    # Both stage datasets changed in one automation tick: main trains; anneal waits for main's new
    # checkpoint (not from the old one) and then trains once from it.
    tick = dg.evaluate_automation_conditions(defs=season.defs, instance=season.instance)
    assert tick.total_requested == 0

    def reseed(raw):
        for st in raw["stages"]:
            st["pack"]["seed"] = 99

    season.edit(reseed)
    assert season.stale() == keys("dataset", "main", "anneal")
    assert season.run('key:"dataset/*"') == keys("dataset", "main", "anneal")
    requested = []
    for _ in range(4):
        tick = dg.evaluate_automation_conditions(
            defs=season.defs, instance=season.instance, cursor=tick.cursor
        )
        wanted = [r.key for r in tick.results if r.true_subset.size]
        requested.append(sorted(k.to_user_string() for k in wanted))
        if wanted:
            assert season.execute(wanted)
            season.trained.update({k.path[-1]: season.trained[k.path[-1]] + 1 for k in wanted})
    assert requested == [["checkpoint/main"], ["checkpoint/anneal"], [], []]
    season.event("both datasets changed, automation", {"model_versions"}, {"model_versions"})

    # A stage retrained (its settings edited): only it and the versions' registry run.
    def lr(raw):
        raw["stages"][1]["train"]["lr"] = 1.0e-3

    season.event(
        "anneal retrained",
        {"checkpoint/anneal"},
        {"checkpoint/anneal", "model_versions"},
        lambda: season.edit(lr),
    )

    # The nightly evaluation tick: every (benchmark, version) without a score of its current weights, once.
    requests = automation.unscored_requests(season.recipe, season.instance, (), season.layout)
    versions = {"main", "main@step_10", "main@step_20", "anneal"}
    assert {(r.asset_selection[0].to_user_string(), r.partition_key) for r in requests} == {
        (f"eval/{b}", v) for b in benchmarks for v in versions
    }
    for r in requests:
        assert season.execute(list(r.asset_selection), r.partition_key)
    assert automation.unscored_requests(season.recipe, season.instance, (), season.layout) == []
    assert season.run('key:"eval/leaderboard"') == {"eval/leaderboard"}
    board = json.loads((season.base / "eval" / "leaderboard.json").read_text())
    assert {r["version"] for r in board} == versions
    for bench in benchmarks:  # comparisons only with the current score of the previous version
        res = current_result(season.layout, bench, "anneal")
        assert res["previous_version"] == "main"
        assert res["previous_score"] == current_result(season.layout, bench, "main")["score"]
    season.check("nightly tick")

    # A source removed: its assets leave the graph (their files stay on disk); the blends change.
    def remove(raw):
        raw["sources"] = [s for s in raw["sources"] if s["name"] != "en_web"]
        mixture = raw["stages"][0]["blend"]["mixture"]
        mixture["en_books"] += mixture.pop("en_web")
        # The English quality model learns en_web as its negatives and main weights en_web by it: the recipe
        # would fail at load naming `languages.en.quality.negatives`, so both go with the source.
        raw["languages"]["en"].pop("quality", None)
        for stage in raw["stages"]:
            stage["blend"].pop("quality_weighting", None)

    kept = ("vi_news", "ja_wiki", "en_books")
    season.event(
        "en_web removed",
        {"blend/main", "dataset/main", "near_duplicates"} | keys("exact_dedup", *kept),
        keys("exact_dedup", *kept)
        | keys("minhash", *kept)
        | {"near_duplicates"}
        | keys("deduped", *kept)
        | {"tokens/en_books"}
        | TRAINING,
        lambda: season.edit(remove),
    )
    assert list((season.base / "corpus").glob("en_web*")), "the removed source's corpus is not deleted"


def _toy_defs(code: str, out: str) -> dg.Definitions:
    """a -> b -> c, each reporting a data version of what it "wrote": a's code version and output are
    given; b writes the same whatever a holds; c reads b."""

    @dg.asset(code_version=code)
    def a() -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion(out))

    @dg.asset(deps=[a], code_version="1")
    def b() -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion("b"))

    @dg.asset(deps=[b], code_version="1")
    def c() -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion("c"))

    return dg.Definitions(assets=[a, b, c])


def test_waves_run_below_a_change_only_while_data_versions_change():
    """`defs.plan.run_stale`: a new code version with the same output reruns that asset alone; a new
    output reruns what reads it, and stops where an output comes out the same; `force` reruns all."""
    from lm_platform.defs.plan import run_stale

    instance = dg.DagsterInstance.ephemeral()

    def season(code: str, out: str, force: bool = False) -> list[list[str]]:
        defs = _toy_defs(code, out)

        def execute(keys, partition):
            return dg.materialize(list(defs.assets), selection=keys, instance=instance).success

        waves = run_stale(defs, instance, "*", execute, force=force)
        return [sorted(p.key.to_user_string() for p in wave) for wave in waves]

    assert season("1", "x") == [["a", "b", "c"]]  # all missing: one run
    assert season("1", "x") == []
    assert season("2", "x") == [["a"]]  # new code, same bytes: b and c stay fresh
    assert season("3", "y") == [["a"], ["b"]]  # new bytes: b reruns, writes the same: c stays fresh
    assert season("3", "y", force=True) == [["a", "b", "c"]]
