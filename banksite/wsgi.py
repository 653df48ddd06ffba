"""The WSGI application (``banksite.wsgi.application``) that gunicorn serves.

Its requests ignore a charset that names no text encoding, as Django ignores
one it does not know (``TextCharsetRequest``).
"""

import os

import django
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.utils.http import parse_header_parameters


class TextCharsetRequest(WSGIRequest):
    """A request whose ``charset`` is used only if it names a text encoding.

    Django takes any codec Python has as the charset, ``zlib`` or ``base64``
    too; decoding the query string with one of those fails while the request
    is made, before any middleware runs, and the client got a 500. Such a
    charset is ignored like an unknown one: the query string and a form are
    read as UTF-8, and the API still answers 415 to a body that is not UTF-8.
    """

    def _set_content_type_params(self, meta):
        self.content_type, self.content_params = parse_header_parameters(
            meta.get("CONTENT_TYPE", "")
        )
        charset = self.content_params.get("charset")
        if charset is not None and _is_text_encoding(charset):
            self.encoding = charset


_ASCII = bytes(range(128))


def _is_text_encoding(name: str) -> bool:
    """Whether ``name`` reads ASCII as ASCII and any byte, as Django reads them.

    Django decodes parameters with ``errors="replace"``. ``zlib`` and
    ``base64`` are not text encodings (LookupError); ``undefined``,
    ``punycode`` and ``idna`` fail on such bytes or read ASCII otherwise
    (UnicodeError, a ValueError).
    """
    try:
        text = (_ASCII + b"\xff").decode(name, "replace")
    except (LookupError, ValueError):
        return False
    return text.startswith(_ASCII.decode("ascii"))


class BankWSGIHandler(WSGIHandler):
    request_class = TextCharsetRequest


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "banksite.settings")
django.setup(set_prefix=False)  # as django.core.wsgi.get_wsgi_application does
application = BankWSGIHandler()
