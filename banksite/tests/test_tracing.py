"""One transfer followed by its correlation id: API request, events, worker logs."""

import json
import uuid

import pytest
from rest_framework.test import APIClient

from eventstore.models import Event
from transfers.models import TransferSummary
from transfers.tests.factories import make_user, open_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def worker_log_entries(worker) -> list[dict]:
    return [
        json.loads(line)
        for line in worker.output().splitlines()
        if line.startswith("{")
    ]


def test_a_transfer_is_followed_by_its_correlation_id_into_the_worker_logs(
    start_celery_worker, wait_for, monkeypatch
):
    # Given a worker writing JSON lines, and a customer with two accounts
    monkeypatch.setenv("LOG_FORMAT", "json")
    worker = start_celery_worker()
    alice = make_user()
    source = open_account(alice, balance=10_000)
    target = open_account(alice)
    api = APIClient()
    api.force_authenticate(alice)
    correlation_id = f"trace-{uuid.uuid4().hex}"

    # When she asks for a transfer, naming a correlation id
    response = api.post(
        "/api/transfers/",
        {"from_account": str(source.id), "to_account": str(target.id), "amount": 2500},
        format="json",
        headers={"X-Correlation-ID": correlation_id},
    )
    assert response.status_code == 202, response.content
    assert response["X-Correlation-ID"] == correlation_id
    request_id = response["X-Request-ID"]
    transfer_id = response.json()["id"]
    wait_for(
        lambda: TransferSummary.objects.filter(
            pk=transfer_id, status="completed"
        ).exists(),
        message="the transfer completed by the worker",
    )

    # Then every event of the transfer, written by the web request and by the
    # worker's handlers, carries the correlation id ...
    traced = Event.objects.filter(metadata__correlation_id=correlation_id)
    streams = set(traced.values_list("stream_id", flat=True))
    assert any(transfer_id in stream for stream in streams)
    assert any(str(source.id) in stream for stream in streams)  # the debit
    assert any(str(target.id) in stream for stream in streams)  # the credit
    types = list(traced.order_by("id").values_list("event_type", flat=True))
    assert len(types) >= 5, types  # requested, debit, debited, credit, completed
    requested = traced.order_by("id").first()
    assert requested.metadata["request_id"] == request_id
    # ... and so do the worker's log lines for each step it ran.
    lines = wait_for(
        lambda: [
            entry["message"]
            for entry in worker_log_entries(worker)
            if entry["correlation_id"] == correlation_id
            and "step done" in entry["message"]
        ],
        message="worker log lines with the correlation id",
    )
    assert any(f"{transfer_id}: debit step done, debited" in line for line in lines)
    assert any(f"{transfer_id}: credit step done, completed" in line for line in lines)
