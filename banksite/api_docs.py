"""The OpenAPI schema and its interactive docs, under ``/api/`` like the API.

drf-spectacular's views render YAML or HTML, and so did their errors; these
answer errors as the rest of the API does (JSON ``{"code", "detail"}``) and
take GET and HEAD only (the docs page has no answer to OPTIONS).
"""

from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.renderers import JSONRenderer


class _ErrorsInJson:
    http_method_names = ["get", "head"]

    def handle_exception(self, exc):
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class SchemaView(_ErrorsInJson, SpectacularAPIView):
    pass


class DocsView(_ErrorsInJson, SpectacularSwaggerView):
    pass
