"""Mixture search (RegMix-style): proxy runs on sampled mixtures, a fitted predictor, a recommended mixture.
`search.py` holds the numbers (sampling, fitting, choosing), `proxy.py` the runs (blend, pack, train, score)
through the platform's own steps. No Dagster here: `defs/mixture.py` turns it into assets."""
