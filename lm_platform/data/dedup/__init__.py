"""Deduplication, one concern per module, in the order the dedup assets run them.

- `exact`: exact duplicates on a normalised key against the persistent index (`exact_dedup/<source>`).
- `near`: MinHash signatures per shard, LSH candidate pairs, verified clusters across sources, and the
  removals read back (`minhash/<source>`, `near_duplicates`).
- `deduped`: a source's output with the near-duplicate removals applied and evaluation leaks removed
  (`deduped/<source>`; the leaks themselves are found by `data/dedup/decontam.py`).
- `staleness`: whether a step's inputs are still the ones its output was computed from (shard
  fingerprints and id digests, `StaleNearDuplicates`).
- The parts they use: `dedup_index` (the SQLite exact index), `local_index` (a local-disk copy of it,
  published atomically), `minhash` (signatures and bands), `near_verify` (exact Jaccard of candidates),
  `decontam` (evaluation-set leaks).
"""

# `dedup_key` is also imported from here by lm_platform_tests/test_demo_graph.py.
from lm_platform.data.dedup.exact import dedup_key

__all__ = ["dedup_key"]
