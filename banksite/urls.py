from django.contrib import admin
from django.contrib.contenttypes.views import shortcut
from django.core.exceptions import ValidationError
from django.http import Http404
from django.urls import include, path, re_path

from accounts.api_errors import api_not_found
from banksite.api_docs import DocsView, SchemaView
from banksite.health import healthz


def view_on_site(request, content_type_id, object_id):
    """Django's admin shortcut to an object's page, 404 for a malformed id.

    Django answers a malformed id for a UUID key with its ``ValidationError``,
    a 500; the route shadows the admin's own (``admin:view_on_site``).
    """
    try:
        return shortcut(request, content_type_id, object_id)
    except ValidationError:
        raise Http404("No such object.") from None


urlpatterns = [
    path(
        "admin/r/<path:content_type_id>/<path:object_id>/",
        admin.site.admin_view(view_on_site),
    ),
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
