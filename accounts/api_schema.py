"""OpenAPI generation conventions of the API (drf-spectacular).

Serializers nested in views are all called ``InputSerializer`` or
``OutputSerializer``; their components are named after the view instead
(``AccountDepositApi.InputSerializer`` -> ``AccountDepositInput``), so no two
endpoints' contracts collide in the schema.
"""

import inspect

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


class AutoSchema(SpectacularAutoSchema):
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
