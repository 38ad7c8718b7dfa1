"""The Dagster shell: one module per domain (assets and checks), `automation` (sensors, schedules),
`metadata` (core results -> metadata), `resources`. Thin; all work happens in the core. The Definitions
of a code location are assembled in one place, `defs/deployment.py: build_deployment_definitions`."""
