"""Model construction: Llama-family models from a recipe config or from a base checkpoint."""
