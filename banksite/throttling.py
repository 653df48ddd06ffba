"""Throttles (API calls per user, logins per client address and per username)
that fail open.

The cache (Redis) only holds the counts: while it is down or hung, an
unthrottled request is better than refusing every login and API call.
"""

import hashlib
import logging

from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


class FailOpenThrottleMixin:
    """Let a request through, with a warning, when the cache cannot be reached."""

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisConnectionError, RedisTimeoutError) as error:
            logger.warning(
                "not throttling %s, cache unreachable: %s", self.scope, error
            )
            return True


class FailOpenUserRateThrottle(FailOpenThrottleMixin, UserRateThrottle):
    """API calls per user (``API_THROTTLE_RATE``)."""


class LoginRateThrottle(FailOpenThrottleMixin, SimpleRateThrottle):
    """Count login attempts per client address (``LOGIN_THROTTLE_RATE``)."""

    scope = "login"

    def get_rate(self) -> str:
        return settings.LOGIN_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {
            "scope": self.scope,
            "ident": self.get_ident(request),
        }


class UsernameLoginRateThrottle(FailOpenThrottleMixin, SimpleRateThrottle):
    """Count login attempts per username (``LOGIN_USERNAME_THROTTLE_RATE``).

    Guesses at one staff member's password spread over many client addresses
    pass the per-address count. The username is read from the login form,
    in any case (usernames differ by more than case here), and kept hashed.
    """

    scope = "login_username"

    def get_rate(self) -> str:
        return settings.LOGIN_USERNAME_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str | None:
        username = request.POST.get("username", "").strip().casefold()
        if not username:
            return None  # nothing to count: the form refuses it anyway
        return self.cache_format % {
            "scope": self.scope,
            "ident": hashlib.sha256(username.encode()).hexdigest(),
        }
