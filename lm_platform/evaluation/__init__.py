"""Evaluations of checkpoints: held-out perplexity first."""
