"""Rebuild read models from the events, with a progress bar each.

The read models are rebuilt together, in one pass over the events and one
transaction (``subscriptions.rebuild_together``): the API keeps reading the
old rows until all the new ones are complete and committed.
"""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from eventstore import subscriptions, verification
from eventstore.models import Event


class Command(BaseCommand):
    help = (
        "Rebuild projections (all that can be rebuilt, or the NAMEs given) from "
        "the events; --verify compares them with a rebuild instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME")
        parser.add_argument(
            "--verify",
            action="store_true",
            help="only compare each live read model with one rebuilt from events",
        )
        parser.add_argument(
            "--list", action="store_true", help="list the projections and stop"
        )

    def handle(self, *args, names, verify=False, list=False, **options):
        rebuildable = {sub.name: sub for sub in verification.rebuildable()}
        if list and names:
            raise CommandError("--list takes no names")
        # A name given twice is one projection, rebuilt (or verified) once.
        names = [*dict.fromkeys(names)]
        if list:
            for name, sub in rebuildable.items():
                models = ", ".join(m._meta.label for m in sub.read_models) or "-"
                self.stdout.write(f"{name}  ({models})")
            return
        unknown = sorted(set(names) - set(rebuildable))
        if unknown:
            raise CommandError(
                f"cannot rebuild {', '.join(unknown)}; choose from "
                f"{', '.join(rebuildable)}"
            )
        runs = (
            # One at a time, each reported as it ends.
            (self._verify(name) for name in names or rebuildable)
            if verify
            else self._rebuild([rebuildable[name] for name in names or rebuildable])
        )
        failed = False
        for run in runs:
            style = self.style.SUCCESS if run.ok else self.style.ERROR
            self.stdout.write(
                style(
                    f"{run.name}: {run.get_outcome_display()}, "
                    f"{run.summary} in {run.duration}"
                )
            )
            failed = failed or not run.ok
        if failed:
            raise CommandError("some projections failed; see above")

    def _rebuild(self, subs: list[subscriptions.Subscription]):
        bars = {
            sub.name: tqdm(
                total=Event.objects.filter(event_type__in=sub.event_types).count(),
                desc=sub.name,
                unit="ev",
                file=self.stderr,
                leave=True,
                position=position,
            )
            for position, sub in enumerate(subs)
        }
        try:
            return verification.repair_together(
                list(bars), progress=lambda name, count: bars[name].update(count)
            )
        finally:
            for bar in bars.values():
                bar.close()

    def _verify(self, name: str):
        self.stderr.write(f"verifying {name} ...")
        return verification.verify(name)
