"""Let the teller group start transfers between any accounts.

The permission is created here (Django would only create it after every
migration ran). Seeing every transfer and the trial balance goes with
``accounts.view_any_account`` (tellers, auditors, operations).
"""

from django.db import migrations


def grant(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(
        app_label="transfers", model="transfersummary"
    )
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type,
        codename="transfer_from_any_account",
        defaults={"name": "Can start transfers between any accounts"},
    )
    group, _ = Group.objects.get_or_create(name="teller")
    group.permissions.add(permission)


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.filter(
        content_type__app_label="transfers", codename="transfer_from_any_account"
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("transfers", "0001_initial"),
        ("accounts", "0002_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
