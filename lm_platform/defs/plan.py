"""What a run on existing storage has to do: the assets of a selection that are missing or stale.

`python -m lm_platform.defs.plan SELECTION [--partition KEY] [--all] [--run]` prints those assets' keys,
one per line (nothing when all are fresh), and says on stderr why each is selected; with `--run` it
materializes them (`dagster asset materialize`, as a user types it), and nothing when all are fresh.
`make demo` runs its steps so: a second `make demo` on the same storage recomputes nothing that did not
change; `--all` (the Makefile's `FORCE=1`) selects the whole selection, as a forced rebuild or retrain.

Staleness is Dagster's own (the same the UI shows): an asset is stale when its code version (the code's
version and the recipe slice it reads, `defs.metadata.versioned`) or the data version of an input differs
from what its last materialization recorded, or when an asset upstream is stale.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg


@dataclass(frozen=True)
class Planned:
    key: dg.AssetKey
    why: str  # "missing", "stale: <causes>", or "forced"


def _resolver(defs: dg.Definitions, instance: dg.DagsterInstance):
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._time import get_current_datetime

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
    from dagster._core.definitions.data_version import StaleStatus

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("selection", help="a Dagster asset selection, as `dagster asset materialize` takes")
    parser.add_argument("--partition", help="judge partitioned assets by this partition")
    parser.add_argument("--all", action="store_true", help="select everything (a forced rebuild)")
    parser.add_argument("--run", action="store_true", help="materialize what is selected")
    args = parser.parse_args(argv)
    from lm_platform.definitions import defs

    with dg.DagsterInstance.get() as instance:
        planned = plan(defs, instance, args.selection, args.partition, args.all)
    for p in planned:
        print(f"  {p.key.to_user_string()}: {p.why}", file=sys.stderr)
    if not planned:
        print(f"  nothing to do: every asset of '{args.selection}' is fresh", file=sys.stderr)
    if not args.run:
        for p in planned:
            print(p.key.to_user_string())
        return 0
    if not planned:
        return 0
    select = " or ".join(f'key:"{p.key.to_user_string()}"' for p in planned)
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "--select", select]
    cmd += ["--partition", args.partition] if args.partition else []
    return subprocess.call([*cmd, "-m", "lm_platform.definitions"])


if __name__ == "__main__":
    sys.exit(main())
