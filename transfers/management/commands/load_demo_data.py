"""``python manage.py load_demo_data``: users, accounts and transfers, once.

Everything goes through the real services, as a teller and customers would
do it: accounts opened, cash deposited, then transfers between customers'
accounts in the same currency (some refused for insufficient funds, as in
life). A second run loads nothing and prints the credentials again.

Standard output is only the credentials block (``run.sh`` shows it again
once the site is up); progress goes to standard error. The passwords are
fixed and printed: this is demo data, refused when DEBUG is off.
"""

import random

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token
from tqdm import tqdm

from accounts import services as accounts
from accounts.errors import BankError
from transfers import services as transfers

# username: (password, groups, superuser)
STAFF = {
    "staff": ("staff-demo-password", ["operations"], True),
    "teller": ("teller-demo-password", ["teller"], False),
    "auditor": ("auditor-demo-password", ["auditor"], False),
}
# username: the currencies of the accounts they hold
CUSTOMERS = {
    "alice": ["EUR", "USD"],
    "bob": ["EUR"],
    "carol": ["EUR", "USD"],
    "dave": ["USD"],
    "erin": ["EUR"],
}
OPENING_DEPOSIT = (50_000, 500_000)  # minor units: 500.00 to 5000.00
TRANSFER_AMOUNT = (100, 40_000)
REFERENCES = ["rent", "dinner", "books", "invoice 2031", "gift", "", "", ""]


class Command(BaseCommand):
    help = "Load demo users, accounts and transfers (once) and print credentials."

    def add_arguments(self, parser):
        parser.add_argument(
            "--transfers", type=int, default=300, help="How many transfers to make."
        )
        parser.add_argument("--seed", type=int, default=2026)

    def handle(self, *args, transfers: int, seed: int, **options):
        if transfers < 0:
            raise CommandError(f"--transfers must be 0 or more, not {transfers}.")
        if not settings.DEBUG:
            raise CommandError("Demo data has known passwords: not with DEBUG off.")
        names = {*STAFF, *CUSTOMERS}
        taken = set(
            get_user_model()
            .objects.filter(username__in=names)
            .values_list("username", flat=True)
        )
        if taken == names:
            self.stderr.write("Demo data already loaded; not loading it again.")
        elif taken:
            raise CommandError(
                f"Users {', '.join(sorted(taken))} exist, but not all the demo "
                "users: this is not a demo database. Nothing was loaded."
            )
        else:
            self._load(random.Random(seed), transfers)
        self.stdout.write(self._credentials())

    def _load(self, rng: random.Random, transfer_count: int) -> None:
        with transaction.atomic():
            users = {
                name: _user(name, password, groups, superuser)
                for name, (password, groups, superuser) in STAFF.items()
            }
            teller = users["teller"]
            opened = []
            for name, currencies in CUSTOMERS.items():
                customer = _user(name, f"{name}-demo-password", [], False)
                for currency in currencies:
                    account = accounts.open_account(
                        owner=customer, currency=currency, actor=teller
                    )
                    accounts.deposit(
                        account_id=account.id,
                        amount=rng.randint(*OPENING_DEPOSIT),
                        actor=teller,
                        reference="opening deposit",
                    )
                    opened.append((customer, account.id, currency))
        # One transaction per transfer, as the API makes them: the process
        # manager moves the money after each commit (in-process when tasks
        # run eagerly, on the worker otherwise).
        for _ in tqdm(range(transfer_count), desc="transfers", unit="transfer"):
            owner, source, currency = rng.choice(opened)
            targets = [a for _, a, c in opened if c == currency and a != source]
            try:
                transfers.request_transfer(
                    actor=owner,
                    from_account=source,
                    to_account=rng.choice(targets),
                    amount=rng.randint(*TRANSFER_AMOUNT),
                    reference=rng.choice(REFERENCES),
                )
            except BankError as refusal:  # not expected; say so and go on
                self.stderr.write(f"transfer refused: {refusal}")

    def _credentials(self) -> str:
        User = get_user_model()
        lines = ["  Demo users (these passwords are for this demo only):"]
        for name, (password, groups, superuser) in STAFF.items():
            user = User.objects.get(username=name)
            token, _ = Token.objects.get_or_create(user=user)
            role = "superuser" if superuser else ", ".join(groups)
            lines.append(
                f"    {name:<8} {role:<10} password {password:<22} token {token.key}"
            )
        lines.append(
            "    customers " + ", ".join(CUSTOMERS) + ": password <name>-demo-password"
        )
        return "\n".join(lines)


def _user(name: str, password: str, groups: list[str], superuser: bool):
    User = get_user_model()
    user = User.objects.create_user(
        username=name,
        password=password,
        email=f"{name}@example.com",
        is_staff=superuser or bool(groups),
        is_superuser=superuser,
    )
    user.groups.set(Group.objects.filter(name__in=groups))
    return user
