"""``Idempotency-Key`` on every POST of the API.

A POST sent with an ``Idempotency-Key`` header claims the key (per user) in
the database, in the same transaction as the command it runs, and stores the
answer there. So:

- a repeat with the same key, user and body gets the first answer again
  (``Idempotent-Replayed: true``) and changes nothing;
- the first answer is a success (2xx) or a business refusal (422, such as
  ``insufficient_funds``): the command runs in a savepoint, and a refusal
  rolls back only that, keeping the claim and storing the refusal. A retry
  of a refused withdrawal must not take money that arrived since;
- any other error (400, 403, 404, 409, 503 ...) rolls the claim back with
  everything else, so the key is free for a corrected retry;
- the same key with another body (or another endpoint) answers 409
  ``idempotency_key_reused``;
- two concurrent requests with one key cannot both run: the second waits on
  the first's row (the unique index) and then replays its answer.

Keys expire ``IDEMPOTENCY_KEY_TTL_HOURS`` after first use (24 hours by
default): an expired key is claimed afresh. ``purge_expired_keys`` (the
``accounts.tasks.purge_idempotency_keys`` task) deletes old rows; nothing
depends on it running.
"""

import datetime
import functools
import hashlib
import json
import re

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from eventstore.context import metadata_context

from .api_errors import bank_error_response
from .errors import BankError
from .models import IdempotencyKey

HEADER = "Idempotency-Key"
# The status of a business refusal: the one error answer a key keeps.
REFUSAL_STATUS = 422
_KEY_MAX_LENGTH = 255
# Printable ASCII, no spaces; the schema declares this same pattern.
_KEY = re.compile(rf"^[\x21-\x7e]{{1,{_KEY_MAX_LENGTH}}}$")

PARAMETER = OpenApiParameter(
    name=HEADER,
    type={"type": "string", "minLength": 1, "maxLength": _KEY_MAX_LENGTH},
    pattern=_KEY.pattern,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        f"Up to {_KEY_MAX_LENGTH} printable ASCII characters. A repeat with the "
        "same key and body returns the first answer (a success or a 422 "
        "refusal) and changes nothing; after any other error the key is free "
        "for a corrected retry. The same key with another body answers 409. "
        "Keys expire after 24 hours, unless the bank configured another time."
    ),
)


class IdempotencyKeyReused(BankError):
    code = "idempotency_key_reused"
    status = 409
    default_detail = "This Idempotency-Key was used with another request."


def idempotent(post):
    """Make an APIView's ``post`` honour the ``Idempotency-Key`` header."""

    @functools.wraps(post)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return post(view, request, *args, **kwargs)
        if not _KEY.fullmatch(key):
            raise ValidationError(
                {HEADER: ["Use 1 to 255 printable ASCII characters."]}
            )
        request_hash = _hash(request)
        with transaction.atomic():
            claimed = _claim(request.user.pk, key, request_hash)
            if claimed is None:
                return _replay(request.user.pk, key, request_hash)
            try:
                # A savepoint: a refusal undoes the command, not the claim.
                with transaction.atomic(), metadata_context(idempotency_key=key):
                    response = post(view, request, *args, **kwargs)
            except BankError as error:
                if error.status != REFUSAL_STATUS:
                    raise
                response = bank_error_response(error)
            else:
                if not 200 <= response.status_code < 300:
                    transaction.set_rollback(True)
                    return response
            _store(claimed, response)
            return response

    return wrapper


def _store(row_id: int, response: Response) -> None:
    headers = (
        {"Location": response["Location"]} if response.has_header("Location") else {}
    )
    IdempotencyKey.objects.filter(pk=row_id).update(
        response_status=response.status_code,
        response_body=response.data,
        response_headers=headers,
    )


def _hash(request) -> str:
    canonical = json.dumps(
        [request.method, request.path, request.data],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _claim(user_id: int, key: str, request_hash: str) -> int | None:
    """Claim the key, or take it over if expired; return the row id or None.

    A concurrent claim of the same key waits here until the first commits
    (then finds it taken) or rolls back (then claims it).
    """
    now = timezone.now()
    expires = now + datetime.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    table = IdempotencyKey._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS k (user_id, key, request_hash, response_status,"
            " response_body, response_headers, created_at, expires_at)"
            " VALUES (%s, %s, %s, NULL, NULL, '{}', %s, %s)"
            " ON CONFLICT (user_id, key) DO UPDATE SET"
            " request_hash = excluded.request_hash, response_status = NULL,"
            " response_body = NULL, response_headers = '{}',"
            " created_at = excluded.created_at, expires_at = excluded.expires_at"
            " WHERE k.expires_at <= excluded.created_at"
            " RETURNING id",
            [user_id, key, request_hash, now, expires],
        )
        row = cursor.fetchone()
    return row[0] if row else None


# The request hash of a back-office form's claim: never a hash of an API
# request, so an API request reusing such a key answers 409.
_BACK_OFFICE_FORM = "back-office form"


def claim_form(user_id: int, form_id) -> bool:
    """Claim a back-office form's one-time id in this transaction.

    Return False if the form was sent before (a double click, a reload): the
    view then does nothing again. A command that fails, refused or not, rolls
    the claim back with it.
    """
    return _claim(user_id, f"form-{form_id}", _BACK_OFFICE_FORM) is not None


def _replay(user_id: int, key: str, request_hash: str) -> Response:
    stored = IdempotencyKey.objects.get(user_id=user_id, key=key)
    if stored.request_hash != request_hash:
        raise IdempotencyKeyReused()
    headers = {**stored.response_headers, "Idempotent-Replayed": "true"}
    return Response(
        stored.response_body, status=stored.response_status, headers=headers
    )


def purge_expired_keys() -> int:
    """Delete expired keys; return how many."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
