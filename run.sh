#!/usr/bin/env bash
# Bring the whole bank up with one command: virtual environment, database,
# migrations, demo data (once, and only with DEBUG on), then the web server
# (gunicorn), a Celery worker and Celery beat. Ctrl-C stops everything, as
# do closing its terminal (SIGHUP) and SIGTERM.
#
#   ./run.sh [--port PORT]          (or PORT=8001 ./run.sh)
#
# gunicorn listens on HOST (127.0.0.1) at PORT (8000); a port in use is
# refused at once. With HOST=0.0.0.0 (or ::) it listens on every address and
# is probed, and shown, at 127.0.0.1 (or [::1]).
# Uses PostgreSQL (DATABASE_URL) and Redis (CELERY_BROKER_URL), localhost by
# default; with either unreachable it runs embedded instead: SQLite in
# var/bank.sqlite3 (SQLITE_PATH), or DATABASE_URL=sqlite:///path as given,
# and Celery tasks run in-process.
# DEMO_DATA=0 skips the demo data; DEMO_TRANSFERS sets how many transfers.
# It gives up, stopping everything, if /healthz does not answer 200 within
# HEALTH_WAIT_SECONDS (60).
set -euo pipefail
cd "$(dirname "$0")"

PORT="${PORT:-8000}"
HOST="${HOST:-127.0.0.1}"
HEALTH_WAIT_SECONDS="${HEALTH_WAIT_SECONDS:-60}"

usage() { sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
    --port) PORT="${2:?--port needs a number}"; shift 2 ;;
    --port=*) PORT="${1#--port=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
# At most 5 digits, read in base 10 (08000 is 8000, not bad octal).
if [[ ! "$PORT" =~ ^[0-9]{1,5}$ ]] || [ $((10#$PORT)) -lt 1 ] || [ $((10#$PORT)) -gt 65535 ]; then
    echo "run.sh: the port (--port or PORT) must be a number from 1 to 65535, not $PORT" >&2
    exit 2
fi
PORT=$((10#$PORT))
case "$HEALTH_WAIT_SECONDS" in '' | *[!0-9]*)
    echo "run.sh: HEALTH_WAIT_SECONDS must be a number" >&2; exit 2 ;;
esac

# An IPv6 address is written in brackets before a port: [::1]:8000.
host="${HOST#[}"
host="${host%]}"
case "$host" in
*:*) bind="[$host]:$PORT" ;;
*) bind="$host:$PORT" ;;
esac
# Every address (0.0.0.0, ::) is no address to connect to, nor an allowed
# host: the health probe and the banner use the loopback instead.
case "$host" in
0.0.0.0) base="http://127.0.0.1:$PORT" ;;
::) base="http://[::1]:$PORT" ;;
*) base="http://${bind}" ;;
esac

if [ -t 1 ]; then
    say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
else
    say() { printf '==> %s\n' "$*"; }
fi

# --- virtual environment: install only what is missing or at another version
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
PY=.venv/bin/python

# --- the port: refuse one in use (a first ./run.sh, say) before anything
# starts. gunicorn would retry it for seconds and give up, while the health
# probe got its 200 from the other server.
port_problem() {
    $PY - "$host" "$PORT" <<'PY'
import errno, socket, sys

host, port = sys.argv[1], int(sys.argv[2])
# Bound as gunicorn binds it: IPv6 for an IPv6 address, SO_REUSEADDR.
with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            print(f"port {port} on {host} is in use (is the bank running already?):"
                  " choose another with --port")
        else:
            print(f"cannot listen on {host} at port {port}: {error.strerror or error}")
        sys.exit(1)
PY
}
if ! problem="$(port_problem)"; then
    say "$problem"
    exit 1
fi

requirements_met() {
    # Every line of requirements.txt is pinned (name[extras]==version).
    .venv/bin/python - requirements.txt <<'PY'
import re, sys
from importlib.metadata import PackageNotFoundError, version

for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    pin = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", line)
    try:
        if not pin or version(pin[1]) != pin[3]:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}
if ! requirements_met; then
    say "installing requirements.txt into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
export PYTHONUNBUFFERED=1

# --- PostgreSQL and Redis, or the embedded fallback
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/bank}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
preflight=0
found="$($PY -m banksite.preflight)" || preflight=$?
if [ "$preflight" = 0 ]; then
    EMBEDDED=0
    say "using $found"
elif [ "$preflight" = 2 ]; then # a malformed setting: no fallback hides it
    say "$found"
    exit 1
else
    EMBEDDED=1
    case "$DATABASE_URL" in
    sqlite:*) ;; # chosen: kept as given
    *)
        sqlite_path="${SQLITE_PATH:-$PWD/var/bank.sqlite3}"
        mkdir -p "$(dirname "$sqlite_path")"
        export DATABASE_URL="sqlite:///$sqlite_path"
        ;;
    esac
    export CELERY_TASK_ALWAYS_EAGER=1
    export CACHE_URL=locmem://
    say "embedded mode ($found): SQLite at ${DATABASE_URL#sqlite:///}, Celery tasks run in-process, no worker or beat"
fi

# Ask the settings, which read DEBUG=0, false, no, off ... in any case.
debug_is_off() {
    DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-banksite.settings}" \
        $PY -c 'import sys; from django.conf import settings; sys.exit(1 if settings.DEBUG else 0)'
}

say "migrating"
$PY manage.py migrate --noinput -v 0
if debug_is_off; then
    $PY manage.py collectstatic --noinput -v 0
fi

credentials=""
if [ "${DEMO_DATA:-1}" != 0 ]; then
    if debug_is_off; then
        say "no demo data: its passwords are known, so not with DEBUG off (DEBUG=1 ./run.sh loads it)"
    elif $PY manage.py help load_demo_data >/dev/null 2>&1; then
        say "demo data"
        # stdout is the credentials (shown again at the end); the progress bar
        # goes to stderr.
        credentials="$($PY manage.py load_demo_data --transfers "${DEMO_TRANSFERS:-300}")"
    else
        say "no demo data yet (the load_demo_data command is not installed)"
    fi
fi

# --- processes; stop them all on Ctrl-C, TERM or HUP (the terminal closed),
# or when one of them dies
pids=()
stop_all() {
    trap - INT TERM HUP EXIT
    # With the terminal gone, saying "stopping" fails (or raises SIGPIPE):
    # that must not stop the stopping.
    set +e
    trap '' PIPE
    if [ ${#pids[@]} -gt 0 ]; then
        say "stopping"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "${pids[@]}" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
        wait 2>/dev/null || true
        say "stopped"
    fi
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all; exit 129' HUP
trap stop_all EXIT

# The request log line comes from the app (with request ids), so gunicorn's
# own access log is off. --timeout is above DATABASE_STATEMENT_TIMEOUT_MS
# (60 s): a request waiting on a slow statement answers the app's JSON 503,
# before gunicorn would kill its worker (an HTML 500).
$PY -m gunicorn banksite.wsgi \
    --bind "$bind" \
    --workers "${WEB_CONCURRENCY:-2}" \
    --timeout 75 \
    --graceful-timeout 10 \
    --no-control-socket \
    --error-logfile - &
gunicorn_pid=$!
pids+=("$gunicorn_pid")
if [ "$EMBEDDED" = 0 ]; then
    $PY -m celery -A banksite worker --loglevel=INFO \
        --concurrency="${CELERY_CONCURRENCY:-2}" --without-gossip --without-mingle &
    pids+=($!)
    $PY -m celery -A banksite beat --loglevel=INFO &
    pids+=($!)
else
    # Eager tasks handle events at once; this retries stopped partitions.
    $PY -m banksite.sweeper &
    pids+=($!)
fi

# An answer is ours only once gunicorn has bound the port, which it has when
# it runs workers: while it retries a port another server took since the
# check above, that server answers. (Without pgrep, an answer is trusted.)
gunicorn_has_bound() {
    ! command -v pgrep >/dev/null || pgrep -P "$gunicorn_pid" >/dev/null
}
healthy=0
deadline=$((SECONDS + HEALTH_WAIT_SECONDS))
while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$gunicorn_pid" 2>/dev/null; then
        say "gunicorn exited before it was healthy (its log above says why)"
        exit 1
    fi
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { say "a process failed to start"; exit 1; }
    done
    if $PY -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "$base/healthz" 2>/dev/null && gunicorn_has_bound; then
        healthy=1
        break
    fi
    sleep 0.2
done
if [ "$healthy" = 0 ]; then
    # The EXIT trap stops everything, as Ctrl-C does.
    say "not healthy: $base/healthz did not answer 200 within $HEALTH_WAIT_SECONDS seconds"
    exit 1
fi

cat <<EOF

  The bank is up ($([ "$EMBEDDED" = 1 ] && echo "embedded: SQLite, tasks in-process" || echo "PostgreSQL + Redis, Celery worker and beat")).

  Admin:     $base/admin/
  API:       $base/api/
  API docs:  $base/api/docs/
  Health:    $base/healthz
${credentials:+
$credentials
}
  Ctrl-C stops everything.

EOF

# Returns when any process exits (or a signal runs the traps above).
set +e
wait -n "${pids[@]}"
status=$?
say "a process exited with status $status; stopping the others"
exit 1
