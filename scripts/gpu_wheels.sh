#!/usr/bin/env bash
# Wheels the lent GPU image lacks (it has Python 3.12, torch and transformers, but no pydantic or
# dagster-pipes, and no network): downloaded here, carried with the working tree, installed offline by
# scripts/gpu_check.sh. Usage: scripts/gpu_wheels.sh [DIR]   (default .gpu-wheels, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gpu-wheels}
PY=${PY:-python}
"$PY" -m pip download --quiet --dest "$DIR" --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  pydantic dagster-pipes pyarrow sentencepiece
ls "$DIR"
