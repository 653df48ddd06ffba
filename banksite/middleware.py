"""Request-wide infrastructure: ids for tracing, 400 on NUL characters, 503 on
database outages, and throttled logins. Nothing here knows about banking."""

import logging
import re
import time
import uuid

import psycopg.errors
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    QueryDict,
    UnreadablePostError,
)
from django.utils.cache import add_never_cache_headers
from rest_framework.authtoken.views import ObtainAuthToken

from eventstore.context import metadata_context
from eventstore.errors import (
    EventFromNewerCode,
    PartitionCountMismatch,
    UnreadableEvent,
)

from .throttling import LoginRateThrottle, UsernameLoginRateThrottle

logger = logging.getLogger("banksite.request")

REQUEST_ID_HEADER = "X-Request-ID"
CORRELATION_ID_HEADER = "X-Correlation-ID"
# What a caller may send as an id: short and safe to put in a log line.
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _id_from(request: HttpRequest, header: str) -> str | None:
    value = request.headers.get(header, "")
    return value if _ID.fullmatch(value) else None


class RequestContextMiddleware:
    """Give each request a request id and a correlation id, and log it.

    Both come from the ``X-Request-ID`` / ``X-Correlation-ID`` headers when a
    caller (or a proxy) sends usable ones, and are made up otherwise; the
    correlation id defaults to the request id. They are put in the event
    store's metadata context, so every event the request appends carries
    them, and on every log line (``banksite.logs.ContextFilter``), and are
    sent back in the response headers.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = _id_from(request, REQUEST_ID_HEADER) or uuid.uuid4().hex
        correlation_id = _id_from(request, CORRELATION_ID_HEADER) or request_id
        request.request_id = request_id
        request.correlation_id = correlation_id
        started = time.monotonic()
        with metadata_context(request_id=request_id, correlation_id=correlation_id):
            response = self.get_response(request)
            logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        response[REQUEST_ID_HEADER] = request_id
        response[CORRELATION_ID_HEADER] = correlation_id
        return response


class NulCharacterMiddleware:
    """Answer 400 when a query or form parameter's name or value holds a NUL.

    PostgreSQL text cannot hold NUL, so such a value reaching a list filter or
    a form would fail in the database as a 500; no real input has one. Under
    ``/api/`` the answer is the API's JSON error, and only the query string is
    checked: the API parses its bodies itself, as JSON (reading one here as a
    form would pre-empt its 413 and 415 answers). An uploaded file's bytes are
    not checked. A cookie holding a NUL (a quoted ``\\000``) is dropped, as if
    never sent: no session or CSRF token has one, and the session's lookup
    would fail in the database.
    """

    MESSAGE = "A parameter holds a NUL character."

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name, value in list(request.COOKIES.items()):
            if "\x00" in name or "\x00" in value:
                del request.COOKIES[name]
        api = _is_api(request)
        try:
            holds_nul = _holds_nul(request.GET) or (
                not api and _form_holds_nul(request)
            )
        except SuspiciousOperation:
            # Too many fields, say: whoever reads them answers, in its format.
            return self.get_response(request)
        if holds_nul:
            if api:
                return JsonResponse(
                    {"code": "parse_error", "detail": self.MESSAGE}, status=400
                )
            return HttpResponseBadRequest(self.MESSAGE, content_type="text/plain")
        return self.get_response(request)


def _is_api(request: HttpRequest) -> bool:
    return request.path_info == "/api" or request.path_info.startswith("/api/")


def _form_holds_nul(request: HttpRequest) -> bool:
    try:
        return _holds_nul(request.POST)
    except UnreadablePostError:
        # The client went away mid-body; CSRF and the view answer as before.
        return False


def _holds_nul(parameters: QueryDict) -> bool:
    return any(
        "\x00" in name or any("\x00" in value for value in values)
        for name, values in parameters.lists()
    )


class ApiNeverCacheMiddleware:
    """Tell browsers and proxies to keep no copy of an API answer.

    Balances and ledgers read with a session would otherwise sit in a
    browser's disk cache; the admin's pages say the same already.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if _is_api(request) and not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response


class DatabaseUnavailableMiddleware:
    """Answer 503 when the database cannot serve a view: JSON under ``/api/``.

    Covers every view, the API's too (its exception handler leaves these to
    this): a database outage is not a bug in the request, so it must not look
    like a 500. Nor is a lock held by another session past the lock timeout
    (``busy``), nor an event this code cannot read (``unreadable_event``: one
    a newer release stored, say, until code that reads it is deployed). So is
    a process whose partition count is not the event store's
    (``misconfigured``; ``/healthz`` fails too, so a load balancer takes it
    out).
    """

    RETRY_AFTER_SECONDS = 5

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        if isinstance(exception, PartitionCountMismatch):
            logger.error("misconfigured: %s", exception)
            return self._unavailable(
                request,
                "misconfigured",
                "This server is misconfigured. Try again shortly.",
            )
        if _from_newer_code(exception):
            logger.error("unreadable event: %s", exception)
            return self._unavailable(
                request,
                "unreadable_event",
                "This data holds an event this version of the bank cannot read;"
                " try again later.",
            )
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        if isinstance(exception.__cause__, psycopg.errors.LockNotAvailable):
            # DATABASE_LOCK_TIMEOUT_MS: another session holds the rows needed.
            logger.warning("database busy: %s", exception)
            return self._unavailable(
                request, "busy", "Another operation holds this data; try again."
            )
        logger.error("database unavailable: %s", exception, exc_info=exception)
        return self._unavailable(
            request,
            "database_unavailable",
            "The database is unavailable. Try again shortly.",
        )

    def _unavailable(self, request, code: str, detail: str) -> HttpResponse:
        headers = {"Retry-After": str(self.RETRY_AFTER_SECONDS)}
        if _is_api(request):
            return JsonResponse(
                {"code": code, "detail": detail}, status=503, headers=headers
            )
        # Back-office pages and /healthz are read in a browser or a probe.
        return HttpResponse(
            detail, status=503, content_type="text/plain", headers=headers
        )


def _from_newer_code(exception: Exception) -> bool:
    """Whether the exception is an event stored by code newer than this.

    Deploying that code makes it readable; a missing or failing upcaster is
    a bug here, left to the 500 and its error mail.
    """
    if isinstance(exception, UnreadableEvent):
        exception = exception.__cause__
    return isinstance(exception, EventFromNewerCode)


class LoginThrottleMiddleware:
    """Answer 429 to too many login attempts from one client address, or at
    one username.

    Throttles POSTs to the admin login (and any view named in
    ``LOGIN_THROTTLE_VIEWS``) and to every DRF token view (a subclass of
    ``ObtainAuthToken``), wherever the API mounts it. The client address is
    found as DRF finds it (``REST_FRAMEWORK["NUM_PROXIES"]`` behind proxies).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        token_view = self._is_token_view(view_func)
        if request.method != "POST" or not (token_view or self._is_listed(request)):
            return None
        refused = [
            throttle
            for throttle in (LoginRateThrottle(), UsernameLoginRateThrottle())
            if not throttle.allow_request(request, None)
        ]
        if not refused:
            return None
        wait = max(max(int(throttle.wait() or 1) for throttle in refused), 1)
        detail = f"Too many login attempts. Try again in {wait} seconds."
        headers = {"Retry-After": str(wait)}
        if token_view or _is_api(request):
            return JsonResponse(
                {"code": "throttled", "detail": detail}, status=429, headers=headers
            )
        # The admin's login form is read in a browser.
        return HttpResponse(
            detail, status=429, content_type="text/plain", headers=headers
        )

    @staticmethod
    def _is_token_view(view_func) -> bool:
        view_class = getattr(view_func, "cls", None)
        return isinstance(view_class, type) and issubclass(view_class, ObtainAuthToken)

    @staticmethod
    def _is_listed(request: HttpRequest) -> bool:
        match = request.resolver_match
        return match is not None and match.view_name in settings.LOGIN_THROTTLE_VIEWS
