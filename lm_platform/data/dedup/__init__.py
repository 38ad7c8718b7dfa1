"""Deduplication, one concern per module, in the order the dedup assets run them.

- `exact`: exact duplicates on a normalised key against the persistent index (`exact_dedup/<source>`).
- `near`: MinHash signatures per shard, LSH candidate pairs, verified clusters across sources, and the
  removals read back (`minhash/<source>`, `near_duplicates`).
- `deduped`: a source's output with the near-duplicate removals applied and evaluation leaks removed
  (`deduped/<source>`; the leaks themselves are found by `data/decontam.py`).
- `staleness`: whether a step's inputs are still the ones its output was computed from (shard
  fingerprints and id digests, `StaleNearDuplicates`).
"""

# `dedup_key` is also imported from here by lm_platform_tests/test_demo_graph.py.
from lm_platform.data.dedup.exact import dedup_key

__all__ = ["dedup_key"]
