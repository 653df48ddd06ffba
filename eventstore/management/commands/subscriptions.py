"""Show each subscription's position, lag and errors; retry or skip a stopped one."""

from django.core.management.base import BaseCommand, CommandError

from eventstore import subscriptions
from eventstore.errors import PartitionCountMismatch
from eventstore.operations import operator_named


class Command(BaseCommand):
    help = "Show subscription positions, lag and errors; retry or skip a stopped one."

    def add_arguments(self, parser):
        action = parser.add_mutually_exclusive_group()
        action.add_argument(
            "--retry", nargs=2, metavar=("SUBSCRIPTION", "PARTITION"), help="retry now"
        )
        action.add_argument(
            "--skip",
            nargs=3,
            metavar=("SUBSCRIPTION", "PARTITION", "SEQUENCE"),
            help="skip the failed event at SEQUENCE, as listed (needs --reason, --by)",
        )
        parser.add_argument("--reason", default="", help="why the event is skipped")
        parser.add_argument(
            "--by", metavar="USERNAME", help="the operations user who decided the skip"
        )

    def handle(self, *args, retry=None, skip=None, reason="", by=None, **options):
        if not skip and (reason or by is not None):
            raise CommandError("--reason and --by go with --skip")
        if skip and by is None:
            raise CommandError("--by USERNAME is required: who decided the skip")
        try:
            if retry:
                partition = whole_number(retry[1], "PARTITION")
                subscriptions.retry_partition(retry[0], partition)
                self.stdout.write(f"{retry[0]}[{retry[1]}] will retry now")
                return
            if skip:
                partition = whole_number(skip[1], "PARTITION")
                sequence = whole_number(skip[2], "SEQUENCE")
                skipped = subscriptions.skip_failed_event(
                    skip[0],
                    partition,
                    sequence=sequence,
                    reason=reason,
                    actor=operator_named(by),
                )
                self.stdout.write(
                    f"{skip[0]}[{skip[1]}] skipped sequence {skipped.sequence}"
                )
                advice = subscriptions.get_subscription(skip[0]).skip_advice
                if advice:
                    self.stdout.write(advice)
                return
            self._show()
        except (LookupError, ValueError, PartitionCountMismatch) as error:
            raise CommandError(str(error)) from error

    def _show(self):
        rows = subscriptions.subscription_status()
        header = f"{'subscription':<28} {'part':>4} {'position':>9} {'head':>9}"
        self.stdout.write(f"{header} {'lag':>6}  error")
        for row in rows:
            error = ""
            if row.failed_sequence is not None:
                last_line = (
                    row.error.strip().splitlines()[-1] if row.error.strip() else ""
                )
                error = (
                    f"STOPPED at {row.failed_sequence} "
                    f"after {row.attempts} attempt(s), "
                    f"next retry {row.retry_at:%H:%M:%S}: {last_line}"
                )
            self.stdout.write(
                f"{row.subscription:<28} {row.partition:>4} {row.sequence:>9} "
                f"{row.head:>9} {row.lag:>6}  {error}"
            )
        total_lag = sum(row.lag for row in rows)
        stopped = sum(row.failed_sequence is not None for row in rows)
        self.stdout.write(
            f"total lag {total_lag} events, {stopped} stopped partition(s)"
        )


def whole_number(value: str, argument: str) -> int:
    """Return ``value`` as an int, or refuse it naming the argument it was given for."""
    try:
        return int(value)
    except ValueError:
        raise CommandError(
            f"{argument} must be a whole number, not {value!r}"
        ) from None
