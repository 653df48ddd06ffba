"""``load_demo_data``: users with tokens, accounts, transfers; once only."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from transfers.models import TransferSummary
from transfers.selectors import totals_snapshot
from transfers.tests.factories import run_process, run_projections

pytestmark = pytest.mark.django_db


def load(**options) -> str:
    out = io.StringIO()
    call_command("load_demo_data", stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def test_demo_data_makes_users_accounts_and_balanced_transfers(settings):
    settings.DEBUG = True

    credentials = load(transfers=8)
    run_process()
    run_projections()

    users = get_user_model().objects
    assert users.get(username="staff").is_superuser
    assert users.get(username="teller").groups.filter(name="teller").exists()
    assert f"token {users.get(username='teller').auth_token.key}" in credentials
    assert TransferSummary.objects.count() == 8
    assert not TransferSummary.objects.exclude(status__in=["completed", "failed"])
    totals = totals_snapshot()["currencies"]
    assert set(totals) == {"EUR", "USD"}
    for figures in totals.values():
        assert figures["in_transit"] == 0
        assert figures["balances"] == figures["deposited"] - figures["withdrawn"]


def test_demo_data_is_loaded_once(settings):
    settings.DEBUG = True
    first = load(transfers=2)

    second = load(transfers=2)

    run_process()
    run_projections()
    assert second == first  # the same credentials, nothing new
    assert TransferSummary.objects.count() == 2
    assert get_user_model().objects.filter(username="alice").count() == 1


def test_a_negative_transfer_count_is_refused_and_loads_nothing(settings):
    settings.DEBUG = True

    with pytest.raises(CommandError, match="--transfers must be 0 or more"):
        load(transfers=-300)

    assert not get_user_model().objects.exists()


def test_demo_data_is_refused_with_debug_off(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="DEBUG"):
        load(transfers=1)


def test_demo_data_is_not_loaded_beside_users_of_the_same_names(settings):
    settings.DEBUG = True
    someone = get_user_model().objects.create_user("staff", password="theirs")

    with pytest.raises(CommandError, match="staff"):
        load(transfers=1)

    assert not TransferSummary.objects.exists()
    assert not Token.objects.filter(user=someone).exists()
