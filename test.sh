#!/usr/bin/env bash
# Run the whole test suite against the local PostgreSQL and Redis.
# Extra arguments go to pytest (e.g. ./test.sh eventstore -x).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/pytest ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt
fi
exec .venv/bin/pytest "$@"
