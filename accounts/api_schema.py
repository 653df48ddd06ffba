"""OpenAPI generation conventions of the API (drf-spectacular).

Serializers nested in views are all called ``InputSerializer`` or
``OutputSerializer``; their components are named after the view instead
(``AccountDepositApi.InputSerializer`` -> ``AccountDepositInput``), so no two
endpoints' contracts collide in the schema.

Answer headers that follow from the API's conventions are documented here,
once, on every operation they apply to: ``Retry-After`` on every 429 and 503,
and ``Idempotent-Replayed`` on the answers an ``Idempotency-Key`` replays (the
2xx and 422 of every operation that takes the key). A header that one
endpoint sends, such as the ``Location`` of what a POST created, is declared
by that endpoint's ``extend_schema`` with ``location_header``.
"""

import inspect

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiParameter

from .idempotency import PARAMETER as IDEMPOTENCY_KEY
from .idempotency import REFUSAL_STATUS


def location_header(status: int, description: str) -> OpenApiParameter:
    """Declare the ``Location`` header that a ``status`` answer always carries."""
    return OpenApiParameter(
        "Location",
        str,
        OpenApiParameter.HEADER,
        required=True,
        description=description,
        response=[status],
    )


def _retry_after() -> dict:
    return {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }


def _idempotent_replayed() -> dict:
    return {
        "description": "`true` when this is the stored first answer to an "
        "earlier request with the same `Idempotency-Key`; absent otherwise.",
        "schema": {"type": "string", "enum": ["true"]},
    }


class AutoSchema(SpectacularAutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        """Add the answer headers of the API's conventions to the operation."""
        operation = super().get_operation(
            path, path_regex, path_prefix, method, registry
        )
        if operation is None:
            return None
        replays = IDEMPOTENCY_KEY in self.get_override_parameters()
        for status, response in operation["responses"].items():
            if status in ("429", "503"):
                response.setdefault("headers", {})["Retry-After"] = _retry_after()
            if replays and (status.startswith("2") or status == str(REFUSAL_STATUS)):
                response.setdefault("headers", {})["Idempotent-Replayed"] = (
                    _idempotent_replayed()
                )
        return operation

    def _get_serializer_name(self, serializer, direction, bypass_extensions=False):
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        cls = serializer if inspect.isclass(serializer) else type(serializer)
        if getattr(serializer, "many", False) and hasattr(serializer, "child"):
            cls = type(serializer.child)
        outer, _, inner = cls.__qualname__.rpartition(".")
        if not outer or "<locals>" in outer:
            return name
        view = outer.rpartition(".")[2].removesuffix("Api")
        base = inner.removesuffix("Serializer")
        return view + name if name.startswith(base) else name
