#!/usr/bin/env bash
# Run the whole test suite against the local PostgreSQL and Redis.
# Extra arguments go to pytest (e.g. ./test.sh eventstore -x).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# Install again whenever a requirement file changed since the last install:
# the stamp holds their hash as of that install.
stamp=.venv/requirements.sha256
wanted="$(cat requirements.txt requirements-dev.txt | sha256sum)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "test.sh: installing requirements.txt and requirements-dev.txt into .venv"
    .venv/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt
    echo "$wanted" >"$stamp"
fi
exec .venv/bin/pytest "$@"
