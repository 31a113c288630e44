"""vread: GET [base]/[type]/[id]/_history/[vid]"""

from ..context import store
from ..http import fhir_response, version_headers
from ..outcome import FhirError
from ..resources import require_supported


def vread(rtype: str, rid: str, vid: str):
    require_supported(rtype)
    if not vid.isdigit():
        raise FhirError.of(
            404,
            "not-found",
            f"'{vid}' is not a version of {rtype}/{rid}",
            f"'{vid}' n'est pas une version de {rtype}/{rid}",
        )
    record = store().vread(rtype, rid, int(vid))
    return fhir_response(record.resource, 200, version_headers(record))
