"""Print what the last materializations of the current recipe produced (used by `make demo`).

    python -m lm_platform.defs.summary

Reads the Dagster instance at $DAGSTER_HOME: every asset of the code location, whether it has been
materialized, and the headline fields its definition declares (`metadata.headline`) from its last
materialization's metadata.
"""

import sys

import dagster as dg

from lm_platform.defs.metadata import HEADLINE_KEY, OPTIONAL_KEY
from lm_platform.tokenization.fertility import describe


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summarize(defs: dg.Definitions, instance: dg.DagsterInstance) -> tuple[list[str], int]:
    """Lines to print, and how many assets have never been materialized (those `make demo` leaves out
    on purpose, `metadata.optional`, are listed with the command that makes them, and not counted)."""
    lines, missing = [], 0
    graph = defs.resolve_asset_graph()
    keys = sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    for key in keys:
        event = instance.get_latest_materialization_event(key)
        name = key.to_user_string()
        if event is None or event.asset_materialization is None:
            left_out = graph.get(key).metadata.get(OPTIONAL_KEY)
            if left_out is not None:
                lines.append(f"  {name:<22} not materialized (left out of make demo: {left_out.value})")
                continue
            lines.append(f"  {name:<22} not materialized")
            missing += 1
            continue
        meta = event.asset_materialization.metadata
        declared = graph.get(key).metadata.get(HEADLINE_KEY)
        fields = declared.value if declared is not None else ()
        shown = ", ".join(f"{f}={_fmt(meta[f].value)}" for f in fields if f in meta)
        lines.append(f"  {name:<22} {shown}")
    return lines + fertility_lines(instance), missing


def fertility_lines(instance: dg.DagsterInstance) -> list[str]:
    """One line per language from the last `tokenizer` materialization, e.g.
    `tokenizer: vi tokens/word 4.93 -> 2.42 (-51%)` (base -> new where the tokenizer extends a base)."""

    event = instance.get_latest_materialization_event(dg.AssetKey("tokenizer"))
    if event is None or event.asset_materialization is None:
        return []
    meta = event.asset_materialization.metadata
    if "fertility_rows" not in meta:
        return []
    where = meta["fertility_measured_on"].value if "fertility_measured_on" in meta else "held-out text"
    return [f"\n  fertility on {where}:"] + [
        f"  tokenizer: {describe(r)}" for r in meta["fertility_rows"].value
    ]


def main() -> int:
    from lm_platform.definitions import defs

    with dg.DagsterInstance.get() as instance:
        lines, missing = summarize(defs, instance)
    print("\nlm_platform: what the demo graph produced")
    print("\n".join(lines))
    print(
        "\nOpen the UI to see lineage, metadata and the loss curve:  make ui  ->  http://127.0.0.1:3000\n"
        "Re-run the tokenizer and what it feeds:  .venv/bin/dagster asset materialize "
        "--select 'tokenizer+' -m lm_platform.definitions"
    )
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
