"""_summary and _elements: return part of a resource, marked SUBSETTED."""

from __future__ import annotations

from functools import cache

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = ("resourceType", "id", "meta")


@cache
def _flagged(rtype: str) -> tuple[frozenset[str], frozenset[str]]:
    """(summary elements, mandatory elements) of a resource type, from the R4 model's metadata."""
    try:
        from fhir.resources.R4B import get_fhir_model_class

        fields = get_fhir_model_class(rtype).model_fields
    except Exception:  # an unknown type: keep what ALWAYS keeps
        return frozenset(), frozenset()
    summary, required = set(), set()
    for name, info in fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        key = info.alias or name
        if extra.get("summary_element_property"):
            summary.add(key)
        if extra.get("element_required") or info.is_required():
            required.add(key)
    return frozenset(summary), frozenset(required)


def shape(resource: dict, args) -> dict:
    summary = args.get("_summary")
    elements = args.get("_elements")
    rtype = resource.get("resourceType", "")
    if elements:
        _, required = _flagged(rtype)
        keep = set(ALWAYS) | required | {_element_name(e, rtype) for e in elements.split(",")}
        return _subsetted({k: v for k, v in resource.items() if k in keep})
    if summary == "true":
        flagged, required = _flagged(rtype)
        keep = set(ALWAYS) | flagged | required
        return _subsetted({k: v for k, v in resource.items() if k in keep})
    if summary == "text":
        _, required = _flagged(rtype)
        keep = set(ALWAYS) | {"text"} | required
        return _subsetted({k: v for k, v in resource.items() if k in keep})
    if summary == "data":
        return _subsetted({k: v for k, v in resource.items() if k != "text"})
    return resource


def _element_name(element: str, rtype: str) -> str:
    """'name' or 'Patient.name' -> 'name' (only top-level elements are selected)."""
    element = element.strip()
    if rtype and element.startswith(rtype + "."):
        element = element[len(rtype) + 1 :]
    return element.split(".")[0]


def _subsetted(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"] + [SUBSETTED]
    return {**resource, "meta": meta}
