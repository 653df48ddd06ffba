"""Serializer parts the account endpoints share (and the transfers API reuses).

Each endpoint's own input and output serializers are nested in its view in
``api.py``; here are the strict fields (request bodies use them: DRF's own
fields turn numbers into text and integers into UUIDs), ``parse`` and the
account output.
"""

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from .domain import MAX_AMOUNT, MAX_REFERENCE_LENGTH


class StrictIntegerField(serializers.IntegerField):
    """An integer that must be a JSON integer: no strings, floats or booleans."""

    default_error_messages = {
        "invalid": "A JSON integer is required (not a string, float or boolean)."
    }

    def to_internal_value(self, data):
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Text that must be a JSON string (DRF would accept numbers and turn them)."""

    default_error_messages = {"invalid": "A JSON string is required."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """A UUID that must be a JSON string (DRF would take an integer as one)."""

    default_error_messages = {"invalid": "A UUID in a JSON string is required."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def amount_field(**kwargs) -> StrictIntegerField:
    options = {
        "min_value": 1,
        "max_value": MAX_AMOUNT,
        "help_text": f"Minor units (cents): an integer from 1 to {MAX_AMOUNT}.",
        **kwargs,
    }
    return StrictIntegerField(**options)


def reference_field(**kwargs) -> StrictCharField:
    options = {
        "max_length": MAX_REFERENCE_LENGTH,
        "required": False,
        "allow_blank": True,
        "default": "",
        "help_text": f"Free text of at most {MAX_REFERENCE_LENGTH} characters.",
        **kwargs,
    }
    return StrictCharField(**options)


def parse(serializer_class: type[serializers.Serializer], data) -> dict:
    """Validate input strictly: an object, no unknown fields; return its data."""
    if data is None or (hasattr(data, "keys") and not data):
        data = {}
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["A JSON object is required."]})
    serializer = serializer_class(data=data)
    unknown = set(data) - set(serializer.fields)
    errors = {name: ["Unknown field."] for name in sorted(unknown)}
    if not serializer.is_valid():
        errors.update(serializer.errors)
    if errors:
        raise ValidationError(errors)
    return serializer.validated_data


def parse_query(serializer_class: type[serializers.Serializer], request) -> dict:
    """Validate a request's query parameters; an empty one counts as absent."""
    given = {
        name: value for name, value in request.query_params.items() if value.strip()
    }
    serializer = serializer_class(data=given)
    if not serializer.is_valid():
        raise ValidationError(serializer.errors)
    return serializer.validated_data


class AccountOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    number = serializers.CharField()
    owner = serializers.CharField(
        allow_null=True, help_text="The owner's username (null if erased)."
    )
    currency = serializers.CharField()
    balance = serializers.IntegerField(help_text="Minor units.")
    status = serializers.ChoiceField(choices=["open", "frozen", "closed"])
    version = serializers.IntegerField(
        help_text="The account's event stream version after the last change."
    )
    opened_at = serializers.DateTimeField()
