"""Instruction tuning and merging (no Dagster): chat-formatted instruction data with assistant-only loss
masks, LoRA adapters through PEFT, mergekit merges, and exported model directories with model cards."""
