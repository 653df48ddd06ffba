"""Who may do what: Django permissions, checked by the API and the admin alike.

| who | permissions |
| --- | --- |
| customer (any user) | none: opens accounts for themself, sees their own |
| ``teller`` group | ``view_any_account``, ``open_account_for_others``, ``move_cash`` |
| ``auditor`` group | ``view_any_account`` only: reads everything, changes nothing |
| ``operations`` group, superusers | ``view_any_account``, ``operate_account`` |

The groups are created by migration ``0002_groups``. Another user's account
answers 404 to a customer (``UnknownAccount``); an action the caller's role
does not allow on something they can see answers 403 (``PermissionDenied``).
"""

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db.models import Q
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated

VIEW_ANY_ACCOUNT = "accounts.view_any_account"
OPEN_ACCOUNT_FOR_OTHERS = "accounts.open_account_for_others"
MOVE_CASH = "accounts.move_cash"
OPERATE_ACCOUNT = "accounts.operate_account"

GROUP_PERMISSIONS = {
    "teller": ["view_any_account", "open_account_for_others", "move_cash"],
    "auditor": ["view_any_account"],
    "operations": ["view_any_account", "operate_account"],
}


def require_permission(user, permission: str, detail: str) -> None:
    """Raise 403 unless ``user`` holds ``permission``."""
    if not user.has_perm(permission):
        raise PermissionDenied(detail)


def is_read_only(user) -> bool:
    """Tell whether ``user`` reads everything but may change nothing (auditor).

    Seeing every account without any right to change one is the auditor's
    role; such a user does not open accounts, not even for themself.
    """
    return user.has_perm(VIEW_ANY_ACCOUNT) and not any(
        user.has_perm(permission)
        for permission in (OPEN_ACCOUNT_FOR_OTHERS, MOVE_CASH, OPERATE_ACCOUNT)
    )


class MayChange(IsAuthenticated):
    """DRF permission: signed in, and not read-only (auditors) for a write.

    Checked before the view reads the body (an ``Idempotency-Key`` has it
    read first), so an auditor's malformed request is told what their role
    allows, not what the body lacks.
    """

    message = "Auditors change nothing."

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        return request.method in SAFE_METHODS or not is_read_only(request.user)


class PermissionBackend(ModelBackend):
    """Django's model backend, loading a user's permissions in one query.

    The stock backend asks twice (the user's own, then their groups'); every
    API request that checks a role pays for it, so one query does both.
    """

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            permissions = Permission.objects.all()
            if not user_obj.is_superuser:
                permissions = permissions.filter(
                    Q(user=user_obj) | Q(group__user=user_obj)
                )
            user_obj._perm_cache = {
                f"{app_label}.{codename}"
                for app_label, codename in permissions.values_list(
                    "content_type__app_label", "codename"
                ).order_by()
            }
        return user_obj._perm_cache
