"""Token authentication: keys looked up only if they could exist, and revoked
with the password."""

import re

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

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


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def revoke_tokens_when_the_password_changes(sender, instance, created, **kwargs):
    """Delete a user's API tokens when their password is set anew.

    A new password (a leaked one replaced, say) ends the user's sessions;
    their tokens, which never expire, go with them. ``set_password`` leaves
    the new password in ``_password`` until the save; a hash Django upgrades
    at login does not, and revokes nothing.
    """
    if not created and instance._password is not None:
        Token.objects.filter(user_id=instance.pk).delete()
