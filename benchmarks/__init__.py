"""Benchmarks: ours against a peer on the same input (contract: ../shared/benchmarks.md)."""
