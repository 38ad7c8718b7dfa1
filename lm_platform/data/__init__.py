"""Plain-Python data stages: reading, normalisation, filters, dedup, blending, packing."""
