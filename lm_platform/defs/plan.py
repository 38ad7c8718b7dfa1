"""What a run on existing storage has to do: the assets of a selection that are missing or stale.

`python -m lm_platform.defs.plan SELECTION [--partition KEY] [--all] [--run]` prints those assets' keys,
one per line (nothing when all are fresh), and says on stderr why each is selected; with `--run` it
materializes them (`dagster asset materialize`, as a user types it) in waves until none is left: an asset
runs again only once an input of it has a new data version, so what an unchanged input feeds is never
recomputed. `make demo` runs its steps so: a second `make demo` on the same storage recomputes nothing;
`--all` (the Makefile's `FORCE=1`) materializes the whole selection first, as a forced rebuild or retrain.

Staleness is Dagster's own (the same the UI shows): an asset is stale when its code version (the code's
version and the recipe slice it reads, `defs.metadata.versioned`) or the data version of a direct input
differs from what its last materialization recorded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime


@dataclass(frozen=True)
class Planned:
    key: dg.AssetKey
    why: str  # "missing", "stale: <causes>", or "forced"


def _resolver(defs: dg.Definitions, instance: dg.DagsterInstance):

    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    return graph, CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def plan(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: str,
    partition: str | None = None,
    force: bool = False,
) -> list[Planned]:
    """The assets of `selection` to materialize (in key order): missing or stale ones, or all of them
    with `force`. A partitioned asset is judged by `partition` (or, without one, by every partition)."""

    graph, resolver = _resolver(defs, instance)
    keys = sorted(dg.AssetSelection.from_string(selection).resolve(graph))
    out = []
    for key in keys:
        if force:
            out.append(Planned(key, "forced"))
            continue
        node = graph.get(key)
        if node.partitions_def is None:
            parts: list[str | None] = [None]
        elif partition is not None:
            parts = [partition]
        else:
            parts = list(node.partitions_def.get_partition_keys(dynamic_partitions_store=instance))
        reasons = []
        for p in parts:
            status = resolver.get_status(key, p)
            where = f" [{p}]" if p is not None else ""
            if status == StaleStatus.MISSING:
                reasons.append(f"missing{where}")
            elif status == StaleStatus.STALE:
                causes = "; ".join(
                    f"{c.asset_key.to_user_string()} {c.reason}"
                    for c in resolver.get_stale_root_causes(key, p)
                )
                reasons.append(f"stale{where}: {causes}")
        if reasons:
            out.append(Planned(key, ", ".join(reasons)))
    return out


def run_stale(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: str,
    execute,
    partition: str | None = None,
    force: bool = False,
    say=lambda line: None,
) -> list[list[Planned]]:
    """Materialize the missing and stale assets of `selection` in waves (`execute(keys, partition)` runs
    one wave and returns whether it succeeded) until every one is fresh; returns the waves. Fails when a
    wave fails, or when the selection is still stale after as many waves as it has assets."""
    waves: list[list[Planned]] = []
    graph = defs.resolve_asset_graph()
    limit = len(dg.AssetSelection.from_string(selection).resolve(graph)) + 1
    planned = plan(defs, instance, selection, partition, force)
    while planned := frontier(graph, planned):
        if len(waves) >= limit:
            raise RuntimeError(f"'{selection}' is still stale after {limit} runs: {planned}")
        for p in planned:
            say(f"  {p.key.to_user_string()}: {p.why}")
        if not execute([p.key for p in planned], partition):
            raise RuntimeError(f"materializing {[p.key.to_user_string() for p in planned]} failed")
        waves.append(planned)
        planned = plan(defs, instance, selection, partition)
    return waves


def frontier(graph, planned: list[Planned]) -> list[Planned]:
    """What one wave runs: the missing (and forced) assets, and the stale ones with nothing stale or missing
    upstream of them in `planned`. A stale asset below another waits for the next wave, where it is judged
    again: it runs only if what lies above it came out with a new data version (and never reads an input
    that is still about to change)."""
    keys = {p.key for p in planned}

    def ancestors(key: dg.AssetKey) -> set[dg.AssetKey]:
        seen: set[dg.AssetKey] = set()
        todo = list(graph.get(key).parent_keys)
        while todo:
            k = todo.pop()
            if k not in seen and graph.has(k):
                seen.add(k)
                todo.extend(graph.get(k).parent_keys)
        return seen

    return [p for p in planned if not p.why.startswith("stale") or not (ancestors(p.key) & keys)]


def partition_keys(defs: dg.Definitions, instance: dg.DagsterInstance, selection: str) -> list[str]:
    """Every partition key the selection's partitioned assets have now, in order."""
    graph = defs.resolve_asset_graph()
    keys: dict[str, None] = {}
    for key in sorted(dg.AssetSelection.from_string(selection).resolve(graph)):
        node = graph.get(key)
        if node.partitions_def is not None:
            keys.update(
                dict.fromkeys(node.partitions_def.get_partition_keys(dynamic_partitions_store=instance))
            )
    return list(keys)


def _cli_execute(keys: list[dg.AssetKey], partition: str | None) -> bool:
    select = " or ".join(f'key:"{k.to_user_string()}"' for k in keys)
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "--select", select]
    cmd += ["--partition", partition] if partition else []
    return subprocess.call([*cmd, "-m", "lm_platform.definitions"]) == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("selection", help="a Dagster asset selection, as `dagster asset materialize` takes")
    parser.add_argument("--partition", help="judge partitioned assets by this partition")
    parser.add_argument("--all", action="store_true", help="select everything (a forced rebuild)")
    parser.add_argument("--run", action="store_true", help="materialize what is selected")
    parser.add_argument(
        "--each-partition",
        action="store_true",
        help="with --run: once per partition the selection's partitioned assets have now (e.g. a mixture "
        "search's candidates, registered by mixture_candidates/<stage>)",
    )
    args = parser.parse_args(argv)
    from lm_platform.definitions import defs

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with dg.DagsterInstance.get() as instance:
        if args.run:
            parts = (
                partition_keys(defs, instance, args.selection) if args.each_partition else [args.partition]
            )
            try:
                waves = [
                    w
                    for p in parts
                    for w in run_stale(defs, instance, args.selection, _cli_execute, p, args.all, say)
                ]
            except RuntimeError as err:
                say(f"error: {err}")
                return 1
            if not waves:
                say(f"  nothing to do: every asset of '{args.selection}' is fresh")
            return 0
        planned = plan(defs, instance, args.selection, args.partition, args.all)
    for p in planned:
        say(f"  {p.key.to_user_string()}: {p.why}")
        print(p.key.to_user_string())
    if not planned:
        say(f"  nothing to do: every asset of '{args.selection}' is fresh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
