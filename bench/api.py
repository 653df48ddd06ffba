"""Requests per second of the accounts API beside a plain DRF/ORM baseline.

    python -m bench.api            # 3 rounds of 5 s per measurement (~1.5 min)
    python -m bench.api --quick    # 1 round of 2 s: check that it runs

One gunicorn process (one sync worker) serves the bank's WSGI app plus the
bench-only ``bench.apibaseline`` app; a second process generates the load
over loopback (``--concurrency`` threads, a new connection per request, as a
sync worker closes each). Measured, interleaved in each round:

- ``GET /api/accounts/{id}/`` (the read model, as its owner) beside
  ``GET /plain/accounts/{id}/`` (a plain model, same output serializer);
- ``POST /api/accounts/{id}/deposit/`` (load the aggregate, check, append an
  event, answer from the aggregate, as a teller) beside
  ``POST /plain/accounts/{id}/deposit/`` (``SELECT ... FOR UPDATE``, update,
  same serializers).

The bench creates a PostgreSQL database of its own on the server
``DATABASE_URL`` names, and a Redis queue no worker reads (the appends'
nudges go there), and drops both at the end. Targets: deposit >= 0.5x and
GET >= 0.9x the plain baseline. The report goes to stdout.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

from . import environment

SETTINGS = "bench.apibaseline.settings"
TARGETS = {"deposit": 0.5, "get": 0.9}


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--load", help=argparse.SUPPRESS)  # internal: JSON spec
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# The load generator (the second process).


def generate_load(spec: dict) -> dict:
    """Send requests for ``seconds`` from ``concurrency`` threads; count answers."""
    deadline = time.monotonic() + spec["seconds"]
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    body = json.dumps(spec["body"]).encode() if spec["body"] is not None else None
    headers = {"Authorization": f"Token {spec['token']}", "Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"

    def run():
        ok = failed = 0
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=30)
            conn.request(spec["method"], spec["path"], body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                ok += 1
            else:
                failed += 1
        with lock:
            counts["ok"] += ok
            counts["failed"] += failed

    started = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(spec["concurrency"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {**counts, "elapsed": time.monotonic() - started}


def measure(spec: dict) -> float:
    """Run the load in a second process; return requests per second."""
    output = subprocess.run(
        [sys.executable, "-m", "bench.api", "--load", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(output)
    if result["failed"]:
        raise RuntimeError(f"{result['failed']} requests failed: {spec['path']}")
    return result["ok"] / result["elapsed"]


# The driver.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure_environment() -> str:
    url = environment.point_at_bench_database("api")
    os.environ.update(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        DEBUG="0",
        SECRET_KEY="bench-only-not-secret",
        CACHE_URL="locmem://",  # throttling counters, in the one server process
        API_THROTTLE_RATE="100000000/min",
        LOG_LEVEL="WARNING",
    )
    return url


def prepare_data() -> dict:
    """Create users, tokens and the two accounts, through the services."""
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.db import connections
    from rest_framework.authtoken.models import Token

    from accounts import services
    from bench.apibaseline.models import PlainAccount
    from eventstore.subscriptions import catch_up

    # The migrated apps first: the baseline's table refers to auth_user.
    call_command("migrate", verbosity=0, interactive=False)
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    owner = User.objects.create_user("bench-owner")
    teller = User.objects.create_user("bench-teller")
    teller.groups.add(Group.objects.get(name="teller"))
    account = services.open_account(owner=owner, currency="EUR", actor=owner)
    services.deposit(account_id=account.id, amount=1, actor=teller)
    catch_up()
    plain = PlainAccount.objects.create(
        number=account.number, owner=owner, currency="EUR", balance=1
    )
    data = {
        "account": str(account.id),
        "plain": str(plain.id),
        "owner_token": Token.objects.create(user=owner).key,
        "teller_token": Token.objects.create(user=teller).key,
    }
    connections.close_all()
    return data


def start_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers=1",
            "--worker-class=sync",
            f"--bind=127.0.0.1:{port}",
            "--log-level=warning",
            "banksite.wsgi:application",
        ],
        env=os.environ.copy(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if server.poll() is not None:
                raise RuntimeError("gunicorn exited") from None
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("gunicorn did not start")


def run(args) -> dict:
    data = prepare_data()
    port = free_port()
    server = start_server(port)
    try:
        amount = {"amount": 1}
        specs = {
            ("get", "api"): (f"/api/accounts/{data['account']}/", "GET", None, "owner"),
            ("get", "plain"): (
                f"/plain/accounts/{data['plain']}/",
                "GET",
                None,
                "owner",
            ),
            ("deposit", "api"): (
                f"/api/accounts/{data['account']}/deposit/",
                "POST",
                amount,
                "teller",
            ),
            ("deposit", "plain"): (
                f"/plain/accounts/{data['plain']}/deposit/",
                "POST",
                amount,
                "teller",
            ),
        }

        def spec(key, seconds):
            path, method, body, who = specs[key]
            return {
                "port": port,
                "path": path,
                "method": method,
                "body": body,
                "token": data[f"{who}_token"],
                "seconds": seconds,
                "concurrency": args.concurrency,
            }

        log("warming up")
        for key in specs:
            measure(spec(key, 1.0))
        rates = {key: [] for key in specs}
        for round_ in range(1, args.rounds + 1):
            for key in specs:
                rates[key].append(measure(spec(key, args.seconds)))
                log(f"round {round_} {key[0]} {key[1]}: {rates[key][-1]:.0f} req/s")
        return {key: statistics.median(values) for key, values in rates.items()}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def report(rates: dict, args) -> bool:
    print(
        f"API bench: 1 gunicorn sync worker, {args.concurrency} client threads "
        f"in a second process, median of {args.rounds} x {args.seconds:g} s"
    )
    print(
        f"{'endpoint':<10}{'accounts API':>16}{'plain DRF+ORM':>16}{'ratio':>9}"
        f"{'target':>9}"
    )
    met = True
    for name, target in TARGETS.items():
        api, plain = rates[(name, "api")], rates[(name, "plain")]
        ratio = api / plain
        met &= ratio >= target
        print(
            f"{name:<10}{api:>12.0f} r/s{plain:>12.0f} r/s{ratio:>8.2f}x"
            f"{target:>8.1f}x {'ok' if ratio >= target else 'MISSED'}"
        )
    return met


def main(argv=None) -> int:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if args.load:
        print(json.dumps(generate_load(json.loads(args.load))))
        return 0
    url = configure_environment()
    broker, queue = environment.point_at_bench_queue("api")
    log(f"bench database {url.rsplit('/', 1)[1]}, queue {queue}")
    environment.create_database(url)
    try:
        rates = run(args)
    finally:
        environment.drop_database(url)
        try:
            environment.clear_queue(broker, queue, everything=True)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide results
            log(f"could not clear the bench queue: {error}")
    return 0 if report(rates, args) else 1


if __name__ == "__main__":
    sys.exit(main())
