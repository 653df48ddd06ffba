"""Index the ledger rows a transfer wrote: a transfer's page looks them up.

Partial (rows with a transfer id): cash movements are never looked up by
transfer, so they add nothing to it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_ledger_account_without_constraint"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("transfer_id__isnull", False)),
                fields=["transfer_id"],
                name="accounts_ledger_transfer",
            ),
        ),
    ]
