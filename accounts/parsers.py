"""The API's only parser: JSON in UTF-8, of bounded size and depth.

DRF reads the body as a stream, past Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``
check, so the bound is enforced here: a larger body answers 413 before it is
read whole. Any other content type answers 415 (DRF's own check), and so does
a ``charset`` other than UTF-8: JSON between systems is UTF-8 (RFC 8259), and
Python's other codecs include ones such as ``zlib`` that would inflate a small
body past the bound.

What parses is refused as malformed (400) when it nests deeper than
``MAX_DEPTH`` (so nothing downstream recurses deeply) or holds a lone
surrogate (``"\\ud800"``: valid JSON syntax, but no Unicode text, so it could
be neither stored nor echoed back in an error message).
"""

import json
import re

from django.conf import settings
from django.utils.http import parse_header_parameters
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, UnsupportedMediaType
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32
_UTF_8 = {"utf-8", "utf8"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_TOO_DEEP = f"JSON parse error - arrays and objects nest over {MAX_DEPTH} levels deep."


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"
    default_detail = "The request body is too large."


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        _require_utf_8(media_type or "")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        too_large = RequestTooLarge(f"The request body is larger than {limit} bytes.")
        if length and length.isdigit() and int(length) > limit:
            raise too_large
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise too_large
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from error
        except RecursionError as error:
            raise ParseError(_TOO_DEEP) from error
        _refuse_unsafe(data)
        return data


def _require_utf_8(media_type: str) -> None:
    charset = parse_header_parameters(media_type)[1].get("charset")
    if charset is not None and charset.lower() not in _UTF_8:
        raise UnsupportedMediaType(
            media_type,
            detail=f"JSON must be UTF-8; charset {charset!r} is not supported.",
        )


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _refuse_unsafe(data) -> None:
    """Refuse deep nesting and lone surrogates, walking without recursion."""
    pending = [(data, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise ParseError(
                    "JSON parse error - a string holds a lone surrogate "
                    "(a \\ud800-\\udfff escape that is not half of a pair)."
                )
        elif isinstance(value, dict | list):
            if depth == MAX_DEPTH:
                raise ParseError(_TOO_DEEP)
            items = [*value, *value.values()] if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
