"""Run by test_sqlite.py: verification on SQLite, as the embedded mode runs it.

Prints one line, ``RESULT {json}``, for the test to judge.
"""

import json
import uuid

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from eventstore import subscriptions, verification  # noqa: E402
from eventstore.models import CheckRun  # noqa: E402
from eventstore.store import append  # noqa: E402
from eventstore.tests.testapp.events import Counted  # noqa: E402
from eventstore.tests.testapp.models import Handled, Tally  # noqa: E402
from eventstore.tests.testapp.projections import tallies  # noqa: E402

assert connection.vendor == "sqlite", connection.vendor
call_command("migrate", verbosity=0)
setup_test_environment()  # so that responses carry their context
tallies.read_models = (Tally, Handled)
streams = [f"tally-{uuid.uuid4()}" for _ in range(4)]
for n, stream in enumerate(streams):
    append(stream, [Counted(amount=n + k) for k in range(1, 6)], 0)
subscriptions.catch_up([tallies])
result = {}


def outcome(run: CheckRun) -> dict:
    return {
        "outcome": run.outcome,
        "summary": run.summary,
        "differences": run.differences,
        "tables": {
            t["table"]: {k: v for k, v in t.items() if k != "table"}
            for t in run.details.get("tables", [])
        },
    }


result["clean"] = outcome(verification.verify(tallies.name))
try:
    call_command("rebuild_projections", tallies.name, verify=True)
    result["command"] = "ok"
except Exception as error:  # reported to the test
    result["command"] = f"{type(error).__name__}: {error}"

client = Client()
client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
response = client.post("/admin/operations/verify/", {"name": tallies.name}, follow=True)
result["page_messages"] = [str(m) for m in response.context["messages"]]
result["page_runs"] = list(
    CheckRun.objects.filter(
        kind=CheckRun.Kind.VERIFY, requested_by__isnull=False
    ).values_list("outcome", flat=True)
)

# One row changed (it differs both ways), one deleted, one twice.
Tally.objects.filter(stream_id=streams[0]).update(total=-1)
Tally.objects.filter(stream_id=streams[1]).delete()
twice = Handled.objects.filter(stream_id=streams[2]).first()
twice.pk = None
twice.save()
result["drift"] = outcome(verification.verify(tallies.name))
print("RESULT " + json.dumps(result, default=str))
