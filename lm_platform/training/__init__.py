"""The trainer entrypoint (a process of its own; reports through Dagster Pipes when launched by it)."""
