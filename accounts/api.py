"""The accounts REST API: one view per endpoint, its serializers inside it.

Each view parses input, calls one service or selector, and serializes the
result. Writes answer from the saved aggregate (read-your-writes), never from
a read model that may lag. Errors are raised and turned into JSON by
``accounts.api_errors.exception_handler``.
"""

import datetime

from django.urls import reverse
from django.utils import dateparse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors, services
from .api_errors import WRITE_ERRORS, error_responses
from .api_schema import location_header
from .domain import SUPPORTED_CURRENCIES, is_valid_account_number
from .idempotency import PARAMETER as IDEMPOTENCY_KEY
from .idempotency import idempotent
from .pagination import PageNumberPagination, paginated
from .permissions import (
    MOVE_CASH,
    OPEN_ACCOUNT_FOR_OTHERS,
    OPERATE_ACCOUNT,
    MayChange,
    require_permission,
)
from .serializers import (
    AccountOutputSerializer,
    StrictCharField,
    amount_field,
    parse,
    parse_query,
    reference_field,
)

ACCOUNT_ID = OpenApiParameter(
    "account_id",
    type=str,
    location=OpenApiParameter.PATH,
    description="The account's id (a UUID).",
)
NOT_YOURS = {404: "`unknown_account`: no such account, or not yours."}


def _account_answer(account, status=200, headers=None) -> Response:
    record = selectors.account_record(account)
    return Response(
        AccountOutputSerializer(record).data, status=status, headers=headers
    )


@extend_schema_field(OpenApiTypes.STR)
class MomentField(serializers.Field):
    """An ISO 8601 moment with a time zone; with ``dates``, also a plain date.

    A date means midnight UTC at its start, or with ``end_of_day`` at its end
    (the start of the next day), so ``to=2024-05-31`` includes that day. The
    moment is returned in UTC; one that UTC cannot hold (Python's datetimes
    end at 0001-01-01 and 9999-12-31) is refused as out of range.
    """

    default_error_messages = {
        "invalid": "Use ISO 8601 with a time zone, e.g. 2024-05-31T12:00:00Z "
        "(encode '+' as %2B in a URL).",
        "naive": "The moment must carry a time zone (Z or +HH:MM).",
        "out_of_range": "Out of range: the moment must lie between "
        "0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.",
        "last_day": "Out of range: 9999-12-31 ends after the last moment "
        "supported; use an earlier date or a moment such as 9999-12-31T23:59:59Z.",
    }

    def __init__(self, *, dates: bool = False, end_of_day: bool = False, **kwargs):
        self.dates = dates
        self.end_of_day = end_of_day
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            if self.dates and (day := dateparse.parse_date(data)) is not None:
                return self._from_day(day)
            moment = dateparse.parse_datetime(data)
        except (ValueError, OverflowError):
            self.fail("invalid")
        if moment is None:
            self.fail("invalid")
        if moment.tzinfo is None:
            self.fail("naive")
        try:
            return moment.astimezone(datetime.UTC)
        except OverflowError:
            self.fail("out_of_range")

    def _from_day(self, day: datetime.date) -> datetime.datetime:
        start = datetime.datetime.combine(day, datetime.time(), datetime.UTC)
        if not self.end_of_day:
            return start
        if day == datetime.date.max:
            self.fail("last_day")
        return start + datetime.timedelta(days=1)

    def to_representation(self, value):
        return value.isoformat()


class AccountsApi(APIView):
    """``GET /api/accounts/`` lists, ``POST /api/accounts/`` opens."""

    permission_classes = [MayChange]

    class ListQuerySerializer(serializers.Serializer):
        owner = serializers.CharField(required=False, help_text="A username.")
        currency = serializers.ChoiceField(choices=SUPPORTED_CURRENCIES, required=False)
        status = serializers.ChoiceField(
            choices=["open", "frozen", "closed"], required=False
        )

    class CreateInputSerializer(serializers.Serializer):
        currency = serializers.ChoiceField(
            choices=SUPPORTED_CURRENCIES, help_text="An ISO 4217 code."
        )
        number = StrictCharField(
            required=False,
            help_text="12 digits whose last two are ISO 7064 MOD 97-10 check "
            "digits; generated when not given.",
        )
        owner = StrictCharField(
            required=False,
            help_text="The owner's username; tellers only (default: yourself).",
        )

        def validate_number(self, value):
            if not is_valid_account_number(value):
                raise serializers.ValidationError(
                    "An account number is 12 digits with valid check digits."
                )
            return value

    @extend_schema(
        operation_id="accounts_list",
        summary="List the accounts you may see",
        description="Customers see their own accounts; staff see all and may "
        "filter by owner, currency and status. Oldest first.",
        parameters=[
            ListQuerySerializer,
            OpenApiParameter("page", int, description="Page number."),
            OpenApiParameter("page_size", int, description="Up to 500."),
        ],
        responses={
            200: paginated(AccountOutputSerializer, "PaginatedAccountList"),
            **error_responses(400, 404),
        },
    )
    def get(self, request):
        filters = parse_query(self.ListQuerySerializer, request)
        accounts = selectors.account_list(user=request.user, filters=filters)
        return PageNumberPagination().paginate(
            accounts,
            request,
            self,
            lambda page: AccountOutputSerializer(
                [selectors.record_from_row(row) for row in page], many=True
            ).data,
        )

    @extend_schema(
        operation_id="accounts_create",
        summary="Open an account",
        description="Opens an account for you, or (tellers) for `owner`. "
        "Answers 201 with a `Location` header.",
        parameters=[
            IDEMPOTENCY_KEY,
            location_header(201, "The new account's URL: `/api/accounts/{id}/`."),
        ],
        request=CreateInputSerializer,
        responses={
            201: AccountOutputSerializer,
            **error_responses(
                *WRITE_ERRORS,
                403,
                codes={
                    403: "Only tellers open accounts for others; auditors none.",
                    409: "`account_number_taken`.",
                },
            ),
        },
    )
    @idempotent
    def post(self, request):
        data = parse(self.CreateInputSerializer, request.data)
        owner = request.user
        if data.get("owner") is not None and data["owner"] != request.user.username:
            # Refused before the lookup: "no such user" would tell anyone which
            # usernames the bank has.
            require_permission(
                request.user,
                OPEN_ACCOUNT_FOR_OTHERS,
                "Only tellers open accounts for others.",
            )
            owner = selectors.user_by_username(data["owner"])
            if owner is None:
                raise ValidationError({"owner": ["No user has this username."]})
        account = services.open_account(
            owner=owner,
            currency=data["currency"],
            number=data.get("number"),
            actor=request.user,
        )
        location = reverse("accounts:detail", kwargs={"account_id": account.id})
        return _account_answer(account, status=201, headers={"Location": location})


class AccountDetailApi(APIView):
    @extend_schema(
        operation_id="accounts_retrieve",
        summary="Show an account",
        parameters=[ACCOUNT_ID],
        responses={
            200: AccountOutputSerializer,
            **error_responses(404, codes=NOT_YOURS),
        },
    )
    def get(self, request, account_id):
        record = selectors.account_detail(user=request.user, account_id=account_id)
        return Response(AccountOutputSerializer(record).data)


class AccountDepositApi(APIView):
    class InputSerializer(serializers.Serializer):
        amount = amount_field()
        reference = reference_field()

    @extend_schema(
        operation_id="accounts_deposit",
        summary="Deposit cash (tellers)",
        parameters=[ACCOUNT_ID, IDEMPOTENCY_KEY],
        request=InputSerializer,
        responses={
            200: AccountOutputSerializer,
            **error_responses(
                *WRITE_ERRORS,
                403,
                404,
                422,
                codes={
                    **NOT_YOURS,
                    403: "Cash needs the teller role.",
                    422: "`account_frozen`, `account_closed`, "
                    "`balance_limit_exceeded`.",
                },
            ),
        },
    )
    @idempotent
    def post(self, request, account_id):
        account_id = selectors.require_visible(user=request.user, account_id=account_id)
        require_permission(request.user, MOVE_CASH, "Cash needs the teller role.")
        data = parse(self.InputSerializer, request.data)
        account = services.deposit(account_id=account_id, actor=request.user, **data)
        return _account_answer(account)


class AccountWithdrawApi(APIView):
    class InputSerializer(serializers.Serializer):
        amount = amount_field()
        reference = reference_field()

    @extend_schema(
        operation_id="accounts_withdraw",
        summary="Withdraw cash (tellers)",
        parameters=[ACCOUNT_ID, IDEMPOTENCY_KEY],
        request=InputSerializer,
        responses={
            200: AccountOutputSerializer,
            **error_responses(
                *WRITE_ERRORS,
                403,
                404,
                422,
                codes={
                    **NOT_YOURS,
                    403: "Cash needs the teller role.",
                    422: "`insufficient_funds`, `account_frozen`, `account_closed`.",
                },
            ),
        },
    )
    @idempotent
    def post(self, request, account_id):
        account_id = selectors.require_visible(user=request.user, account_id=account_id)
        require_permission(request.user, MOVE_CASH, "Cash needs the teller role.")
        data = parse(self.InputSerializer, request.data)
        account = services.withdraw(account_id=account_id, actor=request.user, **data)
        return _account_answer(account)


class AccountOperationApi(APIView):
    """Freeze, unfreeze or close: operations rights, an empty body."""

    service = None

    class InputSerializer(serializers.Serializer):
        """No fields: the body is empty or ``{}``."""

    @idempotent
    def post(self, request, account_id):
        account_id = selectors.require_visible(user=request.user, account_id=account_id)
        require_permission(
            request.user, OPERATE_ACCOUNT, "This needs the operations role."
        )
        parse(self.InputSerializer, request.data)
        account = type(self).service(account_id=account_id, actor=request.user)
        return _account_answer(account)


def _operation_schema(name: str, summary: str, refusals: str):
    return extend_schema(
        operation_id=f"accounts_{name}",
        summary=summary,
        parameters=[ACCOUNT_ID, IDEMPOTENCY_KEY],
        request=AccountOperationApi.InputSerializer,
        responses={
            200: AccountOutputSerializer,
            **error_responses(
                *WRITE_ERRORS,
                403,
                404,
                422,
                codes={
                    **NOT_YOURS,
                    403: "Needs the operations role.",
                    422: refusals,
                },
            ),
        },
    )


class AccountFreezeApi(AccountOperationApi):
    service = staticmethod(services.freeze)

    @_operation_schema("freeze", "Freeze an account (operations)", "`account_closed`.")
    def post(self, request, account_id):
        return super().post(request, account_id)


class AccountUnfreezeApi(AccountOperationApi):
    service = staticmethod(services.unfreeze)

    @_operation_schema(
        "unfreeze", "Unfreeze an account (operations)", "`account_closed`."
    )
    def post(self, request, account_id):
        return super().post(request, account_id)


class AccountCloseApi(AccountOperationApi):
    service = staticmethod(services.close)

    @_operation_schema(
        "close",
        "Close an empty account (operations)",
        "`account_not_empty`, `account_closed`.",
    )
    def post(self, request, account_id):
        return super().post(request, account_id)


class AccountLedgerApi(APIView):
    class QuerySerializer(serializers.Serializer):
        locals()["from"] = MomentField(
            dates=True,
            required=False,
            help_text="A date (from its start, UTC) or a moment with a time zone.",
        )
        to = MomentField(
            dates=True,
            end_of_day=True,
            required=False,
            help_text="A date (through its end, UTC) or a moment with a time zone "
            "(exclusive).",
        )

    class OutputSerializer(serializers.Serializer):
        position = serializers.IntegerField()
        type = serializers.ChoiceField(choices=["deposit", "withdrawal"])
        amount = serializers.IntegerField(
            help_text="Signed minor units: credits positive, debits negative."
        )
        balance_after = serializers.IntegerField()
        transfer_id = serializers.UUIDField(allow_null=True)
        reference = serializers.CharField(allow_blank=True)
        recorded_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="accounts_ledger",
        summary="An account's statement, oldest first",
        parameters=[
            ACCOUNT_ID,
            QuerySerializer,
            OpenApiParameter("page", int, description="Page number."),
            OpenApiParameter("page_size", int, description="Up to 500."),
        ],
        responses={
            200: paginated(OutputSerializer, "PaginatedLedgerEntryList"),
            **error_responses(400, 404, codes=NOT_YOURS),
        },
    )
    def get(self, request, account_id):
        query = parse_query(self.QuerySerializer, request)
        entries = selectors.account_ledger(
            user=request.user,
            account_id=account_id,
            since=query.get("from"),
            until=query.get("to"),
        )
        return PageNumberPagination().paginate(
            entries,
            request,
            self,
            lambda page: self.OutputSerializer(page, many=True).data,
        )


class AccountEventsApi(APIView):
    class OutputSerializer(serializers.Serializer):
        version = serializers.IntegerField()
        event_id = serializers.UUIDField()
        type = serializers.CharField()
        schema_version = serializers.IntegerField()
        data = serializers.DictField()
        metadata = serializers.DictField(
            help_text="Staff see all of it: acting user, request and correlation "
            "ids, idempotency key. Customers see only `causation_id` (the event "
            "that caused this one), when there is one."
        )
        recorded_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="accounts_events",
        summary="The events of an account's stream, in order",
        parameters=[
            ACCOUNT_ID,
            OpenApiParameter("page", int, description="Page number."),
            OpenApiParameter("page_size", int, description="Up to 500."),
        ],
        responses={
            200: paginated(OutputSerializer, "PaginatedAccountEventList"),
            **error_responses(404, codes=NOT_YOURS),
        },
    )
    def get(self, request, account_id):
        events = selectors.account_events(user=request.user, account_id=account_id)
        return PageNumberPagination().paginate(
            events,
            request,
            self,
            lambda page: self.OutputSerializer(
                selectors.event_records(page, user=request.user), many=True
            ).data,
        )


class AccountBalanceApi(APIView):
    class QuerySerializer(serializers.Serializer):
        at = MomentField(
            help_text="ISO 8601 with a time zone, e.g. 2024-05-31T12:00:00Z."
        )

    class OutputSerializer(serializers.Serializer):
        balance = serializers.IntegerField()
        at = serializers.DateTimeField()
        version = serializers.IntegerField(
            help_text="The stream version at that moment (0: not yet opened)."
        )

    @extend_schema(
        operation_id="accounts_balance_at",
        summary="An account's balance at a moment (time travel over its events)",
        parameters=[ACCOUNT_ID, QuerySerializer],
        responses={
            200: OutputSerializer,
            **error_responses(400, 404, codes=NOT_YOURS),
        },
    )
    def get(self, request, account_id):
        query = parse_query(self.QuerySerializer, request)
        balance = selectors.account_balance_at(
            user=request.user, account_id=account_id, moment=query["at"]
        )
        return Response(self.OutputSerializer(balance).data)
