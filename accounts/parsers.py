"""The API's only parser: JSON, of bounded size.

DRF reads the body as a stream, past Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``
check, so the bound is enforced here: a larger body answers 413 before it is
read whole. Any other content type answers 415 (DRF's own check).
"""

import codecs
import json

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"
    default_detail = "The request body is too large."


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        too_large = RequestTooLarge(f"The request body is larger than {limit} bytes.")
        if length and length.isdigit() and int(length) > limit:
            raise too_large
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise too_large
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(body, encoding)
            return json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, LookupError) as error:
            raise ParseError(f"JSON parse error - {error}") from error


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
