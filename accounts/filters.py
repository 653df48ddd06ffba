"""Filters of the account list (django-filter)."""

import django_filters

from .domain import SUPPORTED_CURRENCIES
from .models import AccountBalance


class AccountFilter(django_filters.FilterSet):
    owner = django_filters.CharFilter(field_name="owner__username")
    currency = django_filters.ChoiceFilter(
        choices=[(code, code) for code in SUPPORTED_CURRENCIES]
    )
    status = django_filters.ChoiceFilter(choices=AccountBalance.Status.choices)

    class Meta:
        model = AccountBalance
        fields = ["owner", "currency", "status"]
