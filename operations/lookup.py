"""CodeSystem/$lookup (type level): details of a code — display in the asked language, designations,
properties (e.g. the test family `kind` of a LOINC code)."""

from __future__ import annotations

from fhir_server.outcome import FhirError
from terminology.service import get_service

from ._terminology_params import display_language, parameters
from .registry import operation

PARAMETERS = [
    {"name": "code", "use": "in", "min": 0, "max": "1", "type": "code"},
    {"name": "system", "use": "in", "min": 0, "max": "1", "type": "uri"},
    {"name": "coding", "use": "in", "min": 0, "max": "1", "type": "Coding"},
    {"name": "displayLanguage", "use": "in", "min": 0, "max": "1", "type": "code"},
    {"name": "name", "use": "out", "min": 1, "max": "1", "type": "string"},
    {"name": "version", "use": "out", "min": 0, "max": "1", "type": "string"},
    {"name": "display", "use": "out", "min": 1, "max": "1", "type": "string"},
    {"name": "designation", "use": "out", "min": 0, "max": "*"},
    {"name": "property", "use": "out", "min": 0, "max": "*"},
]


def _system_and_code(call) -> tuple[str, str]:
    coding = call.param("coding")
    system = call.param("system") or (coding or {}).get("system")
    code = call.param("code") or (coding or {}).get("code")
    if not system or not code:
        raise FhirError.of(
            400,
            "required",
            "$lookup needs 'system' and 'code' (or 'coding')",
            "$lookup requiert « system » et « code » (ou « coding »)",
            "code",
        )
    return str(system), str(code)


def _property_part(code: str, value) -> dict:
    if isinstance(value, bool):
        value_part = {"name": "value", "valueBoolean": value}
    elif isinstance(value, (int, float)):
        value_part = {"name": "value", "valueDecimal": value}
    else:
        value_part = {"name": "value", "valueCode": str(value)}
    return {"name": "property", "part": [{"name": "code", "valueCode": code}, value_part]}


@operation(
    "lookup",
    types=("CodeSystem",),
    parameters=PARAMETERS,
    description="Look up a code: display (displayLanguage fr|en), designations and properties",
)
def lookup(call):
    system, code = _system_and_code(call)
    lang = display_language(call)
    found = get_service().lookup(system, code, lang)
    if found is None:
        raise FhirError.of(
            404,
            "not-found",
            f"Unknown code '{code}' in system {system}",
            f"Code « {code} » inconnu dans le système {system}",
            "code",
        )
    result = parameters(
        ("name", "valueString", found["name"]),
        ("version", "valueString", found["version"]),
        ("display", "valueString", found["display"]),
    )
    for language, value in found["designations"].items():
        result["parameter"].append(
            {
                "name": "designation",
                "part": [{"name": "language", "valueCode": language}, {"name": "value", "valueString": value}],
            }
        )
    for prop, value in found["properties"].items():
        result["parameter"].append(_property_part(prop, value))
    return result
