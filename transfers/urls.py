from django.urls import path

from . import api

app_name = "transfers"

urlpatterns = [
    path("transfers/", api.TransfersApi.as_view(), name="list"),
    path(
        "transfers/<str:transfer_id>/", api.TransferDetailApi.as_view(), name="detail"
    ),
    path("totals/", api.TotalsApi.as_view(), name="totals"),
]
