"""Blending: exact-token blends of the sources' token shards, tokenization per source, packing into training sequences, and the dataset card."""
