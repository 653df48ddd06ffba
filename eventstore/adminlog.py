"""Staff actions in Django's admin log, for every app's back-office pages."""

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType


def log_staff_action(
    request, model, *, object_id=None, object_repr: str, message: str, flag=CHANGE
) -> LogEntry:
    """Record what a staff member did to an object of ``model``.

    Takes the model and the id rather than a row, because a read-model row
    may not exist yet when a staff action's events have just been stored.
    """
    return LogEntry.objects.create(
        user_id=request.user.pk,
        content_type=ContentType.objects.get_for_model(model),
        object_id=None if object_id is None else str(object_id),
        object_repr=object_repr[:200],
        action_flag=flag,
        change_message=message,
    )
