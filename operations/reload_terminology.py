"""$reload-terminology (system level, POST): re-read the code lists of terminology/ in this server
process and store the CodeSystem/ValueSet resources that changed. With several web processes,
each reloads on its next start, or when this operation reaches it; `python -m terminology reload`
checks the files first."""

from __future__ import annotations

from fhir_server.code_lists import reload_code_lists

from .registry import OperationCall, operation


@operation(
    "reload-terminology",
    system=True,
    affects_state=True,
    description="Reload the code lists (LOINC subset, SNOMED, DCC value sets) from terminology/",
)
def reload_terminology(call: OperationCall) -> dict:
    summary = reload_code_lists(call.store)
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "codeSystems", "valueInteger": len(summary["codeSystems"])},
            {"name": "valueSets", "valueInteger": len(summary["valueSets"])},
            {"name": "written", "valueInteger": summary["written"]},
        ],
    }
