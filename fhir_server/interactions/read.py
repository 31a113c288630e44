"""read: GET [base]/[type]/[id]"""

from flask import request

from ..context import store
from ..http import fhir_response, version_headers
from ..resources import require_supported
from .elements import shape


def read(rtype: str, rid: str):
    require_supported(rtype)
    record = store().read(rtype, rid)
    if request.headers.get("If-None-Match") == record.etag:
        return fhir_response(None, 304, version_headers(record))
    return fhir_response(shape(record.resource, request.args), 200, version_headers(record))
