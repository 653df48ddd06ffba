"""Create the teller, auditor and operations groups with their permissions.

See ``accounts.permissions`` for who may do what. The permissions are created
here (Django would only create them after every migration ran).
"""

from django.db import migrations

PERMISSIONS = {
    "view_any_account": "Can see every account, ledger and event",
    "open_account_for_others": "Can open accounts for other users",
    "move_cash": "Can deposit and withdraw cash",
    "operate_account": "Can freeze, unfreeze and close accounts",
}
GROUP_PERMISSIONS = {
    "teller": ["view_any_account", "open_account_for_others", "move_cash"],
    "auditor": ["view_any_account"],
    "operations": ["view_any_account", "operate_account"],
}


def create_groups(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(
        app_label="accounts", model="accountbalance"
    )
    permissions = {
        codename: Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )[0]
        for codename, name in PERMISSIONS.items()
    }
    for group_name, codenames in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        group.permissions.add(*(permissions[codename] for codename in codenames))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(
        name__in=list(GROUP_PERMISSIONS)
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
