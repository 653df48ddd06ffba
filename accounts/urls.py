from django.urls import path

from . import api

app_name = "accounts"

urlpatterns = [
    path("accounts/", api.AccountsApi.as_view(), name="list"),
    path("accounts/<str:account_id>/", api.AccountDetailApi.as_view(), name="detail"),
    path(
        "accounts/<str:account_id>/deposit/",
        api.AccountDepositApi.as_view(),
        name="deposit",
    ),
    path(
        "accounts/<str:account_id>/withdraw/",
        api.AccountWithdrawApi.as_view(),
        name="withdraw",
    ),
    path(
        "accounts/<str:account_id>/freeze/",
        api.AccountFreezeApi.as_view(),
        name="freeze",
    ),
    path(
        "accounts/<str:account_id>/unfreeze/",
        api.AccountUnfreezeApi.as_view(),
        name="unfreeze",
    ),
    path(
        "accounts/<str:account_id>/close/", api.AccountCloseApi.as_view(), name="close"
    ),
    path(
        "accounts/<str:account_id>/ledger/",
        api.AccountLedgerApi.as_view(),
        name="ledger",
    ),
    path(
        "accounts/<str:account_id>/events/",
        api.AccountEventsApi.as_view(),
        name="events",
    ),
    path(
        "accounts/<str:account_id>/balance/",
        api.AccountBalanceApi.as_view(),
        name="balance",
    ),
]
