"""Token authentication that looks up only keys that could exist."""

import re

from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

# DRF's keys are 20 random bytes in hex.
_KEY = re.compile(r"[0-9a-fA-F]{40}")


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, refusing a malformed key before the database.

    A key PostgreSQL cannot even compare (one with a NUL byte) would otherwise
    raise a database error, a 500; it answers 401 like any bad token.
    """

    def authenticate_credentials(self, key):
        if not _KEY.fullmatch(key):
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        return super().authenticate_credentials(key)
