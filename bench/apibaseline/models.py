import uuid

from django.db import models


class PlainAccount(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    number = models.CharField(max_length=12)
    owner = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="+")
    currency = models.CharField(max_length=3)
    balance = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, default="open")
    version = models.PositiveIntegerField(default=1)
    opened_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.number
