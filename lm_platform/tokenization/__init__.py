"""Tokenizers: SentencePiece training with HF export, fertility per language."""
