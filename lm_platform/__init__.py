"""lm_platform: from raw text to a language-specialised small LM, as Dagster assets."""
