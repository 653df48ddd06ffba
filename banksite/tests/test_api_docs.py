"""The schema and docs under /api/ answer errors as the rest of the API does."""

import re

import pytest
from django.contrib.staticfiles import finders
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("get", "/api/schema/", {"HTTP_AUTHORIZATION": "Token nope"}, 401),
        ("post", "/api/schema/", {}, 405),
        ("delete", "/api/schema/", {}, 405),
        ("post", "/api/docs/", {}, 405),
        ("options", "/api/docs/", {}, 405),
        ("options", "/api/schema/", {}, 405),
        ("get", "/api/docs/?format=json", {}, 404),
    ],
)
def test_schema_and_docs_errors_are_json_errors(method, path, headers, status):
    response = getattr(APIClient(), method)(path, **headers)

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"code", "detail"}


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/schema/", "application/vnd.oai.openapi; charset=utf-8"),
        ("/api/schema/?format=json", "application/vnd.oai.openapi+json"),
        ("/api/docs/", "text/html; charset=utf-8"),
    ],
)
def test_schema_and_docs_still_answer_in_their_formats(path, content_type):
    response = APIClient().get(path)

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert APIClient().head(path).status_code == 200


def test_the_docs_page_loads_its_scripts_from_this_site():
    """Swagger UI came from a CDN's latest release: another origin's script
    running beside the session-authenticated API."""
    page = APIClient().get("/api/docs/").content.decode()

    sources = re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"([^\"]+)\"", page)

    assert any("swagger-ui-bundle.js" in source for source in sources)
    assert [source for source in sources if not source.startswith("/static/")] == []
    assert all(finders.find(source.removeprefix("/static/")) for source in sources)
