#!/usr/bin/env bash
# PostgreSQL (Debian's `postgresql` package) for the production-instance test (lm_platform_tests/
# test_postgres_instance.py), installed with apt-get when missing and when this runs as root. apt-get waits
# for the dpkg lock (another installer running) instead of failing, and never asks anything.
set -euo pipefail

if command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "postgres: initdb not found; install Debian's 'postgresql' package (apt-get install postgresql)" >&2
  echo "postgres: the Postgres instance test is skipped until then" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -y -q)
echo "postgres: installing Debian's postgresql"
"${apt[@]}" update </dev/null
"${apt[@]}" install --no-install-recommends postgresql </dev/null
