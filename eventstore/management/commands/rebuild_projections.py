"""Rebuild read models from the events, with a progress bar.

Each rebuild runs in one transaction (``subscriptions.rebuild``): the API
keeps reading the old rows until the new ones are complete and committed.
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
        failed = False
        for name in names or rebuildable:
            run = self._verify(name) if verify else self._rebuild(rebuildable[name])
            style = self.style.SUCCESS if run.ok else self.style.ERROR
            self.stdout.write(
                style(
                    f"{name}: {run.get_outcome_display()}, "
                    f"{run.summary} in {run.duration}"
                )
            )
            failed = failed or not run.ok
        if failed:
            raise CommandError("some projections failed; see above")

    def _rebuild(self, sub: subscriptions.Subscription):
        total = Event.objects.filter(event_type__in=sub.event_types).count()
        with tqdm(
            total=total, desc=sub.name, unit="ev", file=self.stderr, leave=True
        ) as bar:
            return verification.repair(sub.name, progress=bar.update)

    def _verify(self, name: str):
        self.stderr.write(f"verifying {name} ...")
        return verification.verify(name)
