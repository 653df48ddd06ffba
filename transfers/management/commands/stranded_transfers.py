"""``python manage.py stranded_transfers``: list, resume or refund stranded transfers.

A transfer is stranded when an operator skipped the event of its next step
in the ``transfers.process`` subscription (``manage.py subscriptions --skip``
or the operations page): it stays ``pending`` or ``debited`` for good.
``--resume`` runs the steps left, as the process manager would; ``--refund``
gives a ``debited`` transfer's amount back to its source. Either refuses a
transfer that is not stranded, and moves money at most once however often
it runs.
"""

import logging
import uuid

from django.core.management.base import BaseCommand, CommandError

from accounts.admin import format_money
from accounts.errors import BankError
from eventstore.context import metadata_context
from eventstore.errors import EventStoreError
from eventstore.operations import operator_named
from transfers import selectors, services

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "List stranded transfers (a step skipped); resume or refund one."

    def add_arguments(self, parser):
        action = parser.add_mutually_exclusive_group()
        action.add_argument(
            "--resume", metavar="TRANSFER_ID", help="run the steps left of it"
        )
        action.add_argument(
            "--refund",
            metavar="TRANSFER_ID",
            help="give its amount in transit back to its source",
        )
        parser.add_argument(
            "--reason", default="", help="why; kept in the events' metadata"
        )
        parser.add_argument(
            "--by",
            metavar="USERNAME",
            help="the operations user who decided; the events' acting user",
        )

    def handle(self, *args, resume=None, refund=None, reason="", by=None, **options):
        if resume is None and refund is None:
            if reason or by is not None:
                raise CommandError("--reason and --by go with --resume or --refund.")
            self._show()
            return
        transfer_id = _transfer_id(resume if resume is not None else refund)
        if not reason.strip():
            raise CommandError("--reason is required to resume or refund a transfer.")
        if by is None:
            raise CommandError("--by USERNAME is required: who decided.")
        try:
            actor = operator_named(by)
        except ValueError as error:
            raise CommandError(str(error)) from None
        try:
            reason.encode()
        except UnicodeEncodeError:
            raise CommandError("--reason is not valid UTF-8 text.") from None
        command = (
            services.transfer_resume if resume is not None else services.transfer_refund
        )
        try:
            with metadata_context(reason=reason.strip(), via="command"):
                transfer = command(transfer_id=transfer_id, actor=actor)
        except BankError as refusal:
            raise CommandError(refusal.detail) from refusal
        except Exception as error:
            # The step failed before, which is why it was skipped, and may fail
            # again with any error: it rolled back. Logged with its traceback.
            logger.exception("could not finish transfer %s", transfer_id)
            raise CommandError(f"Not done, nothing was changed: {error}") from error
        outcome = f" ({transfer.failure_reason})" if transfer.failure_reason else ""
        self.stdout.write(f"Transfer {transfer.id} is {transfer.status}{outcome}.")

    def _show(self):
        stranded = list(selectors.stranded_transfers().order_by("created_at"))
        if not stranded:
            self.stdout.write("No stranded transfers.")
            return
        for row in stranded:
            try:
                transfer = services.get_transfer(row.id)
            except EventStoreError as error:
                self.stdout.write(
                    f"{row.id} {row.status}: its events cannot be read by this"
                    f" code ({error})"
                )
                continue
            skip = selectors.skipped_step(transfer)
            if skip is None:  # finished since the list was read
                continue
            self.stdout.write(
                f"{row.id} {row.status} {format_money(row.amount, row.currency)} "
                f"since {row.created_at:%Y-%m-%d %H:%M:%S}; step skipped "
                f"{skip.skipped_at:%Y-%m-%d %H:%M:%S}: {skip.reason}"
            )


def _transfer_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise CommandError(f"{text!r} is not a transfer id (a UUID).") from None
