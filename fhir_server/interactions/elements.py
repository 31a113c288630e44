"""_summary and _elements: return part of a resource, marked SUBSETTED."""
from __future__ import annotations

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = ("resourceType", "id", "meta")


def shape(resource: dict, args) -> dict:
    summary = args.get("_summary")
    elements = args.get("_elements")
    if elements:
        keep = set(ALWAYS) | {e.strip() for e in elements.split(",")}
        return _subsetted({k: v for k, v in resource.items() if k in keep})
    if summary == "text":
        return _subsetted({k: v for k, v in resource.items() if k in ALWAYS + ("text",)})
    if summary == "data":
        return _subsetted({k: v for k, v in resource.items() if k != "text"})
    return resource


def _subsetted(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"] + [SUBSETTED]
    return {**resource, "meta": meta}
