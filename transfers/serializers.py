"""What the transfers API shows of a transfer (each view nests its own input)."""

from rest_framework import serializers

from .models import TransferSummary


class TransferOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    from_account = serializers.UUIDField()
    to_account = serializers.UUIDField()
    amount = serializers.IntegerField(help_text="Minor units.")
    currency = serializers.CharField()
    reference = serializers.CharField()
    status = serializers.ChoiceField(choices=TransferSummary.Status.choices)
    failure_reason = serializers.CharField(
        help_text="Why a failed transfer failed: insufficient_funds, "
        "source_frozen, source_closed, target_frozen, target_closed, "
        "target_balance_limit, refunded_by_operations (staff gave a stranded "
        "transfer's amount back to its source); empty otherwise."
    )
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    refunded_at = serializers.DateTimeField(
        allow_null=True, help_text="When the amount went back to the source."
    )


class CurrencyTotalsSerializer(serializers.Serializer):
    balances = serializers.IntegerField(help_text="The sum of all balances.")
    in_transit = serializers.IntegerField(
        help_text="Debited from a source, not yet credited or refunded."
    )
    deposited = serializers.IntegerField(help_text="External deposits.")
    withdrawn = serializers.IntegerField(help_text="External withdrawals.")


class TotalsOutputSerializer(serializers.Serializer):
    position = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Per event store partition, the sequence number up to which "
        "the figures include every money event.",
    )
    currencies = serializers.DictField(child=CurrencyTotalsSerializer())
