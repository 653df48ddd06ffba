"""The transfers REST API: one view per endpoint, its serializers inside it.

``POST /api/transfers/`` answers 202 with the pending transfer at once: the
money moves afterwards, on a Celery worker (see ``process.py``). Answers to
writes come from the saved aggregate, never from a read model that may lag.
"""

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api_errors import WRITE_ERRORS, error_responses
from accounts.api_schema import location_header
from accounts.idempotency import PARAMETER as IDEMPOTENCY_KEY
from accounts.idempotency import idempotent
from accounts.pagination import PageNumberPagination, paginated
from accounts.permissions import MayChange
from accounts.serializers import (
    StrictUUIDField,
    amount_field,
    parse,
    parse_query,
    reference_field,
)

from . import selectors, services
from .models import TransferSummary
from .serializers import TotalsOutputSerializer, TransferOutputSerializer

TRANSFER_ID = OpenApiParameter(
    "transfer_id",
    type=str,
    location=OpenApiParameter.PATH,
    description="The transfer's id (a UUID).",
)


class TransfersApi(APIView):
    """``GET /api/transfers/`` lists, ``POST /api/transfers/`` requests."""

    permission_classes = [MayChange]

    class ListQuerySerializer(serializers.Serializer):
        status = serializers.ChoiceField(
            choices=TransferSummary.Status.choices, required=False
        )
        account = serializers.UUIDField(
            required=False, help_text="Transfers from or to this account."
        )

    class CreateInputSerializer(serializers.Serializer):
        from_account = StrictUUIDField(help_text="Yours, unless a teller.")
        to_account = StrictUUIDField()
        amount = amount_field()
        reference = reference_field()

    @extend_schema(
        operation_id="transfers_list",
        summary="List the transfers you may see",
        description="Customers see transfers from or to their own accounts; "
        "staff see all. Newest first.",
        parameters=[
            ListQuerySerializer,
            OpenApiParameter("page", int, description="Page number."),
            OpenApiParameter("page_size", int, description="Up to 500."),
        ],
        responses={
            200: paginated(TransferOutputSerializer, "PaginatedTransferList"),
            **error_responses(400, 404, codes={404: "No such page."}),
        },
    )
    def get(self, request):
        filters = parse_query(self.ListQuerySerializer, request)
        transfers = selectors.transfer_list(user=request.user, **filters)
        return PageNumberPagination().paginate(
            transfers,
            request,
            self,
            lambda page: TransferOutputSerializer(
                [selectors.record_from_summary(row) for row in page], many=True
            ).data,
        )

    @extend_schema(
        operation_id="transfers_create",
        summary="Request a transfer",
        description="Answers 202 with the pending transfer and a `Location` "
        "header; a worker then debits the source and credits the target. A "
        "refusal found later (insufficient funds, a frozen or closed account) "
        "ends the transfer `failed` with a `failure_reason`.",
        parameters=[
            IDEMPOTENCY_KEY,
            location_header(
                202,
                "The transfer's URL, to follow its outcome: `/api/transfers/{id}/`.",
            ),
        ],
        request=CreateInputSerializer,
        responses={
            202: TransferOutputSerializer,
            **error_responses(
                *WRITE_ERRORS,
                403,
                422,
                codes={
                    403: "Auditors change nothing; only tellers start transfers "
                    "from others' accounts.",
                    422: "`same_account`, `currency_mismatch`, `unknown_account` "
                    "(an unknown target, or a source that is unknown or not "
                    "yours: one answer for both).",
                },
            ),
        },
    )
    @idempotent
    def post(self, request):
        data = parse(self.CreateInputSerializer, request.data)
        transfer = services.request_transfer(actor=request.user, **data)
        location = reverse("transfers:detail", kwargs={"transfer_id": transfer.id})
        return Response(
            TransferOutputSerializer(selectors.record_from_saved(transfer)).data,
            status=202,
            headers={"Location": location},
        )


class TransferDetailApi(APIView):
    @extend_schema(
        operation_id="transfers_retrieve",
        summary="Show a transfer",
        parameters=[TRANSFER_ID],
        responses={
            200: TransferOutputSerializer,
            **error_responses(404, codes={404: "No such transfer, or not yours."}),
        },
    )
    def get(self, request, transfer_id):
        record = selectors.transfer_detail(user=request.user, transfer_id=transfer_id)
        return Response(TransferOutputSerializer(record).data)


class TotalsApi(APIView):
    @extend_schema(
        operation_id="totals_retrieve",
        summary="The trial balance (staff)",
        description="Per currency, from one snapshot: the sum of balances, the "
        "money in transit, external deposits and withdrawals; "
        "`balances + in_transit == deposited - withdrawn` always holds. "
        "`position` says which events the figures include.",
        responses={200: TotalsOutputSerializer, **error_responses(403)},
    )
    def get(self, request):
        if not selectors.may_see_every_transfer(request.user):
            raise PermissionDenied("The trial balance is for staff.")
        return Response(TotalsOutputSerializer(selectors.totals_snapshot()).data)
