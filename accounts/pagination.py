"""The API's pagination: DRF's page numbers, ``?page_size=`` up to 500."""

from rest_framework import pagination, serializers


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def paginate(self, queryset, request, view, serialize):
        """Return the paginated response of ``serialize(page_items)``."""
        page = self.paginate_queryset(queryset, request, view=view)
        return self.get_paginated_response(serialize(page))


def paginated(serializer_class: type[serializers.Serializer], name: str):
    """Return a serializer describing one page of ``serializer_class`` (OpenAPI)."""
    return type(
        name,
        (serializers.Serializer,),
        {
            "__module__": serializer_class.__module__,
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )
