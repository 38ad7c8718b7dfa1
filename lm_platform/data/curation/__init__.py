"""Curation: normalisation, the filter chain (filters/), PII redaction, reference language models, the quality classifier and the noise generator."""
