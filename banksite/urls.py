from django.contrib import admin
from django.urls import include, path, re_path

from accounts.api_errors import api_not_found
from banksite.api_docs import DocsView, SchemaView
from banksite.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("accounts.urls")),
    path("api/", include("transfers.urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", DocsView.as_view(url_name="schema"), name="docs"),
    # After every API route: any other path under api/ answers a JSON 404
    # (and is never redirected by APPEND_SLASH, which would turn a POST into
    # a GET).
    re_path(r"^api(?:/|$)", api_not_found, name="api_not_found"),
    path("healthz", healthz, name="healthz"),
]
