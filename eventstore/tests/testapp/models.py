from django.db import models


class Tally(models.Model):
    """A read model: the running total per stream."""

    stream_id = models.CharField(max_length=200, primary_key=True)
    total = models.BigIntegerField(default=0)
    events = models.PositiveIntegerField(default=0)

    def __str__(self):
        return f"{self.stream_id}: {self.total}"


class Handled(models.Model):
    """One row per handler run that committed, to count effects per event."""

    event_id = models.UUIDField()
    stream_id = models.CharField(max_length=200)
    version = models.PositiveIntegerField()
    partition = models.PositiveSmallIntegerField()
    sequence = models.BigIntegerField()
    handled_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.stream_id}@{self.version}"
