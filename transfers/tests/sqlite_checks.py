"""Run by test_sqlite.py: the trial balance and verification on SQLite.

As the embedded mode runs them: tasks in-process, "Run now" on the operations
page. Prints one line, ``RESULT {json}``, for the test to judge.
"""

import json

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from accounts import services as accounts  # noqa: E402
from eventstore.models import CheckRun  # noqa: E402
from eventstore.store import partition_heads  # noqa: E402
from transfers import services as transfers  # noqa: E402
from transfers import trial_balance  # noqa: E402
from transfers.selectors import independent_trial_balance  # noqa: E402

PROJECTIONS = ["accounts.balances", "transfers.summary", "transfers.totals"]

assert connection.vendor == "sqlite", connection.vendor
call_command("migrate", verbosity=0)
setup_test_environment()  # so that responses carry their context
root = User.objects.create_superuser("root", "root@example.com", "pw")
alice = User.objects.create_user("alice", password="pw")
bob = User.objects.create_user("bob", password="pw")
source = accounts.open_account(owner=alice, currency="EUR", actor=root)
target = accounts.open_account(owner=bob, currency="EUR", actor=root)
accounts.deposit(account_id=source.id, amount=1000, actor=root)
accounts.withdraw(account_id=source.id, amount=100, actor=root)
transfer = transfers.request_transfer(
    actor=root, from_account=source.id, to_account=target.id, amount=300
)
result = {"transfer": transfers.get_transfer(transfer.id).status}
try:
    result["before_any_event"] = independent_trial_balance(
        dict.fromkeys(partition_heads(), 0)
    )
except Exception as error:  # reported to the test
    result["before_any_event"] = f"{type(error).__name__}: {error}"

client = Client()
client.force_login(root)
response = client.post(
    "/admin/operations/check/", {"name": trial_balance.NAME}, follow=True
)
result["page_messages"] = [str(m) for m in response.context["messages"]]
result["runs"] = list(
    CheckRun.objects.filter(kind=CheckRun.Kind.CHECK).values(
        "outcome", "summary", "details"
    )
)
try:
    call_command("rebuild_projections", *PROJECTIONS, verify=True)
    result["verify_command"] = "ok"
except Exception as error:  # reported to the test
    result["verify_command"] = f"{type(error).__name__}: {error}"
result["verify_runs"] = dict(
    CheckRun.objects.filter(kind=CheckRun.Kind.VERIFY).values_list("name", "outcome")
)
print("RESULT " + json.dumps(result, default=str))
