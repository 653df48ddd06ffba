"""Give the back office's roles the event store's permissions; schedule its jobs.

The roles are the groups of DESIGN.md's "Who may do what" (created with
``get_or_create`` here and in the accounts app's migration, whichever runs
first): everyone on staff reads the events and the operations page; the
operations group also retries and skips stopped partitions, verifies,
repairs and rebuilds projections, and changes the schedules. Superusers hold
every permission anyway.

The scheduled jobs are rows of django-celery-beat's tables, not entries of
``CELERY_BEAT_SCHEDULE``: the database scheduler rewrites the rows of those
entries each time beat starts, which would undo what staff changed in the
admin. Rows made here are created once and then belong to staff.
"""

from django.db import migrations

EVENTSTORE_PERMISSIONS = {
    "checkrun": {
        "operate_subscriptions": "Can retry or skip stopped partitions, verify, "
        "repair and rebuild projections",
        "view_checkrun": "Can view check run",
    },
    "event": {"view_event": "Can view event"},
    "checkpoint": {"view_checkpoint": "Can view checkpoint"},
    "skippedevent": {"view_skippedevent": "Can view skipped event"},
}
SCHEDULE_MODELS = ("periodictask", "intervalschedule", "crontabschedule")
READERS = ("teller", "auditor", "operations")
OPERATORS = ("operations",)

NIGHTLY_VERIFICATION = "Verify projections (nightly)"
TRIAL_BALANCE = "Run the checks, such as the trial balance"


def permission(apps, app_label, model, codename, name):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    content_type, _ = ContentType.objects.get_or_create(
        app_label=app_label, model=model
    )
    return Permission.objects.get_or_create(
        content_type=content_type, codename=codename, defaults={"name": name}
    )[0]


def grant(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    reading = [
        permission(apps, "eventstore", model, codename, name)
        for model, codenames in EVENTSTORE_PERMISSIONS.items()
        for codename, name in codenames.items()
        if codename.startswith("view_")
    ]
    reading += [
        permission(
            apps, "django_celery_beat", model, f"view_{model}", f"Can view {model}"
        )
        for model in SCHEDULE_MODELS
    ]
    operating = [
        permission(
            apps,
            "eventstore",
            "checkrun",
            "operate_subscriptions",
            EVENTSTORE_PERMISSIONS["checkrun"]["operate_subscriptions"],
        )
    ]
    operating += [
        permission(
            apps,
            "django_celery_beat",
            model,
            f"{action}_{model}",
            f"Can {action} {model}",
        )
        for model in SCHEDULE_MODELS
        for action in ("add", "change")
    ]
    for name in READERS:
        Group.objects.get_or_create(name=name)[0].permissions.add(*reading)
    for name in OPERATORS:
        Group.objects.get_or_create(name=name)[0].permissions.add(*operating)


def schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    nightly, _ = CrontabSchedule.objects.get_or_create(
        minute="30",
        hour="2",
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone="UTC",
    )
    quarter_hour, _ = IntervalSchedule.objects.get_or_create(every=15, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=NIGHTLY_VERIFICATION,
        defaults={
            "task": "eventstore.verify_projections",
            "crontab": nightly,
            "description": "Rebuild each read model from the events into a "
            "shadow copy, compare it with the live one and record the result "
            "on the operations page. Repairs are started from that page.",
        },
    )
    PeriodicTask.objects.get_or_create(
        name=TRIAL_BALANCE,
        defaults={
            "task": "eventstore.run_checks",
            "interval": quarter_hour,
            "description": "At a cut where the projections are caught up, "
            "compare independently kept figures; mail the operations staff "
            "when they differ.",
        },
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name__in=[NIGHTLY_VERIFICATION, TRIAL_BALANCE]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("eventstore", "0003_checkrun"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunPython(grant, migrations.RunPython.noop),
        migrations.RunPython(schedule, unschedule),
    ]
