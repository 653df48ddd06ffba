"""The API's one error format and the one exception handler that makes it.

Every error answers JSON ``{"code": ..., "detail": ..., "fields"?: {...}}``:

| status | codes |
| --- | --- |
| 400 | ``invalid`` (with ``fields``), ``parse_error``, ``invalid_amount`` |
| 401 | ``not_authenticated``, ``authentication_failed`` |
| 403 | ``permission_denied`` |
| 404 | ``not_found``, ``unknown_account``, ``unknown_transfer`` |
| 405 | ``method_not_allowed`` |
| 409 | ``conflict``, ``idempotency_key_reused``, ``account_number_taken`` |
| 413 | ``request_too_large`` |
| 415 | ``unsupported_media_type`` |
| 422 | a business rule said no: ``insufficient_funds``, ``account_frozen``, ... |
| 429 | ``throttled`` |
| 503 | ``database_unavailable``, ``busy``, ``unreadable_event``, ``misconfigured`` |

``extend_schema(responses=error_responses(...))`` documents them per
endpoint. The transfers API uses the same handler and helpers, and
``api_not_found`` answers any other path under ``/api`` (a catch-all route).
"""

import logging

import psycopg.errors
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from eventstore.errors import ConcurrencyError

from .errors import BankError
from .parsers import RequestTooLarge


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="A stable machine-readable code.")
    detail = serializers.CharField(help_text="A message for people.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Per-field messages (400 only).",
    )


STATUS_TEXT = {
    400: "Malformed input (`invalid`, with per-field messages in `fields`).",
    401: "No or bad credentials (`not_authenticated`, `authentication_failed`).",
    403: "Not allowed for your role (`permission_denied`).",
    404: "Unknown, or not yours (`not_found`, `unknown_account`, `unknown_transfer`).",
    405: "Method not allowed (`method_not_allowed`).",
    409: "A conflict: `conflict` (concurrent writers, retries did not resolve "
    "it) or `idempotency_key_reused` (the same key with another body).",
    413: "The body is too large (`request_too_large`).",
    415: "The body is not JSON in UTF-8 (`unsupported_media_type`).",
    422: "A business rule said no.",
    429: "Too many requests (`throttled`).",
    503: "The database is unreachable (`database_unavailable`), another"
    " operation holds the data past the lock timeout (`busy`), an event this"
    " version cannot read (`unreadable_event`), or this server is"
    " misconfigured (`misconfigured`).",
}

# Every endpoint may answer these: 400 to a malformed query string too (a NUL
# character, too many parameters), whatever its own parameters.
COMMON_ERRORS = (400, 401, 405, 429, 503)
# And every POST these.
WRITE_ERRORS = (400, 409, 413, 415)


def error_responses(*statuses: int, codes: dict[int, str] | None = None) -> dict:
    """Return OpenAPI responses for these error statuses and the common ones."""
    codes = codes or {}
    return {
        status: OpenApiResponse(
            ErrorSerializer,
            description=" ".join(
                filter(None, [STATUS_TEXT[status], codes.get(status)])
            ),
        )
        for status in sorted({*statuses, *COMMON_ERRORS})
    }


def error_body(code: str, detail: str, fields: dict | None = None) -> dict:
    body = {"code": code, "detail": str(detail)}
    if fields:
        body["fields"] = fields
    return body


def bank_error_response(error: BankError) -> Response:
    """Answer a bank error: its status, ``{"code", "detail"}``."""
    return Response(error_body(error.code, error.detail), status=error.status)


def _fields(detail) -> dict:
    """Turn DRF's nested validation detail into ``{field: [messages]}``."""
    if isinstance(detail, dict):
        return {str(key): _messages(value) for key, value in detail.items()}
    return {"non_field_errors": _messages(detail)}


def _messages(value) -> list[str]:
    if isinstance(value, dict):
        return [f"{key}: {m}" for key, item in value.items() for m in _messages(item)]
    if isinstance(value, list | tuple):
        return [m for item in value for m in _messages(item)]
    return [str(value)]


def exception_handler(exc, context):
    """Answer every error the API can meet as ``{"code", "detail", "fields"?}``."""
    if isinstance(exc, BankError):
        set_rollback()
        return bank_error_response(exc)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    if isinstance(exc, SuspiciousOperation):
        exc = _from_suspicious(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, exceptions.APIException):
        response = drf_exception_handler(exc, context)
        if isinstance(exc, exceptions.ValidationError):
            response.data = error_body(
                "invalid", "The input is not valid.", _fields(exc.detail)
            )
        else:
            response.data = error_body(
                _code(exc), exc.detail if isinstance(exc.detail, str) else str(exc)
            )
        return response
    if isinstance(exc, ConcurrencyError):
        set_rollback()
        return Response(
            error_body("conflict", "The account changed concurrently; try again."),
            status=409,
        )
    if isinstance(exc, OperationalError | InterfaceError):
        set_rollback()
        if isinstance(
            exc.__cause__,
            psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure,
        ):
            return Response(
                error_body("conflict", "A concurrent change won; try again."),
                status=409,
            )
        # The database cannot serve (unreachable, or a lock held past the
        # lock timeout): banksite's DatabaseUnavailableMiddleware answers 503
        # for every view, the API's too.
        return None


def _code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def _from_suspicious(exc: SuspiciousOperation) -> exceptions.APIException:
    """Log as Django does (``django.security.*``); answer 413 or 400."""
    logging.getLogger(f"django.security.{type(exc).__name__}").error(
        "%s", exc, exc_info=exc
    )
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge()
    return exceptions.ParseError(str(exc))


@csrf_exempt
def api_not_found(request):
    """Answer a path under ``/api`` that no endpoint has with a JSON 404."""
    detail = "No API endpoint has this path."
    if not request.path_info.endswith("/"):
        try:
            match = resolve(f"{request.path_info}/", getattr(request, "urlconf", None))
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            detail += f" Did you mean {request.path}/ (with the trailing slash)?"
    return JsonResponse(error_body("not_found", detail), status=404)
