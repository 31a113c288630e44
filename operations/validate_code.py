"""ValueSet/$validate-code (type and instance level): is this code in this value set?"""

from __future__ import annotations

from fhir_server.outcome import FhirError
from terminology.service import get_service

from ._terminology_params import display_language, parameters, value_set_url
from .registry import operation

PARAMETERS = [
    {"name": "url", "use": "in", "min": 0, "max": "1", "type": "uri"},
    {"name": "code", "use": "in", "min": 0, "max": "1", "type": "code"},
    {"name": "system", "use": "in", "min": 0, "max": "1", "type": "uri"},
    {"name": "display", "use": "in", "min": 0, "max": "1", "type": "string"},
    {"name": "coding", "use": "in", "min": 0, "max": "1", "type": "Coding"},
    {"name": "codeableConcept", "use": "in", "min": 0, "max": "1", "type": "CodeableConcept"},
    {"name": "displayLanguage", "use": "in", "min": 0, "max": "1", "type": "code"},
    {"name": "result", "use": "out", "min": 1, "max": "1", "type": "boolean"},
    {"name": "message", "use": "out", "min": 0, "max": "1", "type": "string"},
    {"name": "display", "use": "out", "min": 0, "max": "1", "type": "string"},
]


def _candidates(call) -> list[tuple[str | None, str, str | None]]:
    """(system, code, display) triples to try, from code+system, coding or codeableConcept."""
    if call.param("code"):
        return [(call.param("system"), str(call.param("code")), call.param("display"))]
    coding = call.param("coding")
    if isinstance(coding, dict) and coding.get("code"):
        return [(coding.get("system"), coding["code"], coding.get("display"))]
    concept = call.param("codeableConcept")
    codings = [
        (c.get("system"), c["code"], c.get("display"))
        for c in (concept or {}).get("coding", [])
        if isinstance(c, dict) and c.get("code")
    ]
    if not codings:
        raise FhirError.of(
            400,
            "required",
            "$validate-code needs 'code', 'coding' or 'codeableConcept'",
            "$validate-code requiert « code », « coding » ou « codeableConcept »",
            "code",
        )
    return codings


@operation(
    "validate-code",
    types=("ValueSet",),
    instance_types=("ValueSet",),
    parameters=PARAMETERS,
    description="Check that a code (with optional system and display) belongs to a value set",
)
def validate_code(call):
    service = get_service()
    url = value_set_url(call, service)
    lang = display_language(call)
    outcomes = [service.validate_code(url, system, code, display, lang) for system, code, display in _candidates(call)]
    best = next((o for o in outcomes if o["result"]), outcomes[0])
    message = best["message_fr"] if lang == "fr" and best["message_fr"] else best["message"]
    return parameters(
        ("result", "valueBoolean", best["result"]),
        ("message", "valueString", message),
        ("display", "valueString", best["display"]),
    )
