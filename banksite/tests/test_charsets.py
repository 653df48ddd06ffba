"""A request charset that names no text encoding is ignored, never a 500.

``zlib`` and ``base64`` are codecs Python knows, so Django took them and then
failed to decode the query string with them while making the request, before
any middleware. These requests go through ``banksite.wsgi.application``, the
application gunicorn serves (the test client makes its requests itself).
"""

import io
import json
import wsgiref.util

import pytest

from banksite.wsgi import application

# The application closes the database connection after each request, as it
# does in production: that would end a test's own transaction.
pytestmark = pytest.mark.django_db(transaction=True)

# Codecs that are no text encoding, or fail on ASCII or read it otherwise.
UNUSABLE = ["zlib", "base64", "undefined", "idna", "punycode", "utf-7x"]


def serve(method: str, path: str, content_type: str, body: bytes = b""):
    """Run one request through the WSGI application; return (status, body)."""
    path, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    wsgiref.util.setup_testing_defaults(environ)
    statuses = []
    chunks = application(environ, lambda status, headers: statuses.append(status))
    content = b"".join(chunks)
    return int(statuses[0].split()[0]), content


@pytest.mark.parametrize("charset", UNUSABLE)
@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/accounts/?page=1", 401),
        ("/admin/login/?next=/admin/&name=%E9", 200),
        ("/healthz?probe=1", 200),
    ],
)
def test_a_query_string_is_read_as_utf_8(charset, path, status):
    answered, _ = serve("GET", path, f"text/plain; charset={charset}")

    assert answered == status


@pytest.mark.parametrize("charset", UNUSABLE)
def test_an_api_body_in_another_charset_still_answers_415(charset):
    answered, body = serve(
        "POST",
        "/api/accounts/",
        f"application/json; charset={charset}",
        b'{"currency": "EUR"}',
    )

    assert answered in (401, 415)  # either way the contract's JSON error
    assert json.loads(body)["code"] in ("not_authenticated", "unsupported_media_type")


def test_a_text_charset_is_still_used():
    from banksite.wsgi import TextCharsetRequest

    environ = {"REQUEST_METHOD": "GET", "QUERY_STRING": "name=%E9"}
    environ["CONTENT_TYPE"] = "text/plain; charset=latin-1"
    wsgiref.util.setup_testing_defaults(environ)
    request = TextCharsetRequest(environ)

    assert request.encoding == "latin-1"
    assert request.GET["name"] == "é"
