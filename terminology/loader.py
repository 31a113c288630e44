"""Load the code lists (terminology/data, terminology/dcc/valuesets) as FHIR CodeSystem and ValueSet dicts.

Everything here is data in, resources out: adding a code list is adding a JSON file.

- `data/*.json`: CodeSystem resources (or `{"codeSystems": [...]}` holders of several). A CodeSystem whose
  `valueSet` element names an all-codes ValueSet gets that ValueSet generated.
- `data/valuesets/*.json`: ValueSet resources with `compose` rules (concept lists, property filters).
- `dcc/valuesets/*.json`: the EU DCC value sets, vendored unmodified in their own format; each becomes a
  ValueSet `<BASE>/ValueSet/dcc-<valueSetId>`, and its codes are merged into a CodeSystem fragment of their
  system (LOINC and SNOMED codes join our LOINC/SNOMED fragments) so that $lookup knows them too.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

BASE_URL = "https://sidep.example.fr/fhir"
HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
VALUESET_DIR = DATA_DIR / "valuesets"
DCC_DIR = HERE / "dcc" / "valuesets"

# DCC files that are not code lists (vaccine encoding instructions map names to several codes).
DCC_NOT_CODE_LISTS = {"vaccine-encoding-instructions.json"}
# The RAT device list comes twice (release example and the larger snapshot): keep the larger one.
DCC_SUPERSEDED = {"test-manf-example.json"}


def valueset_url(vs_id: str) -> str:
    return f"{BASE_URL}/ValueSet/{vs_id}"


def _read_json(path: Path):
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def load_data_code_systems(data_dir: Path = DATA_DIR) -> list[dict]:
    systems = []
    for path in sorted(data_dir.glob("*.json")):
        doc = _read_json(path)
        systems.extend(doc["codeSystems"] if "codeSystems" in doc else [doc])
    return systems


def load_data_value_sets(valueset_dir: Path = VALUESET_DIR) -> list[dict]:
    return [_read_json(path) for path in sorted(valueset_dir.glob("*.json"))]


def all_codes_value_set(code_system: dict) -> dict:
    """The ValueSet that CodeSystem.valueSet promises: every code of the system."""
    url = code_system["valueSet"]
    return {
        "resourceType": "ValueSet",
        "id": url.rstrip("/").rsplit("/", 1)[-1],
        "url": url,
        "name": code_system.get("name"),
        "title": code_system.get("title"),
        "status": "active",
        "compose": {"include": [{"system": code_system["url"]}]},
    }


def dcc_value_set(doc: dict, file_name: str) -> tuple[dict, dict[str, list[dict]]]:
    """Convert one DCC value-set file into a FHIR ValueSet and the concepts it contributes per system."""
    vs_id = "dcc-" + _slug(doc["valueSetId"])
    by_system: dict[str, list[dict]] = {}
    for code, entry in doc["valueSetValues"].items():
        concept = {"code": code, "display": entry.get("display", code)}
        if entry.get("active") is False:
            concept["property"] = [{"code": "status", "valueCode": "inactive"}]
        by_system.setdefault(entry["system"], []).append(concept)
    include = [
        {"system": system, "concept": [{"code": c["code"]} for c in concepts]} for system, concepts in by_system.items()
    ]
    value_set = {
        "resourceType": "ValueSet",
        "id": vs_id,
        "url": valueset_url(vs_id),
        "name": "Dcc" + "".join(p.capitalize() for p in _slug(doc["valueSetId"]).split("-")),
        "title": f"EU DCC value set {doc['valueSetId']}",
        "status": "active",
        "version": doc.get("valueSetDate"),
        "publisher": "eHealth Network (EU DCC)",
        "description": f"Converted from the vendored EU DCC value set file {file_name}.",
        "copyright": "EU DCC value sets, Apache-2.0 (ehn-dcc-development/ehn-dcc-valuesets).",
        "compose": {"include": include},
    }
    return value_set, by_system


def _fragment_for(system: str) -> dict:
    """A CodeSystem fragment for a system we only know through the DCC value sets."""
    return {
        "resourceType": "CodeSystem",
        "id": "dcc-" + _slug(system.split("//")[-1]),
        "url": system,
        "name": "Dcc" + _slug(system.split("//")[-1]).replace("-", "_"),
        "title": f"Codes of {system} used by the EU DCC value sets",
        "status": "active",
        "content": "fragment",
        "caseSensitive": True,
        "concept": [],
    }


STATUS_PROPERTY = {
    "code": "status",
    "uri": "http://hl7.org/fhir/concept-properties#status",
    "type": "code",
    "description": "inactive when the DCC list marks the code inactive",
}


def _merge_concepts(code_system: dict, concepts: list[dict]) -> None:
    known = {c["code"] for c in code_system.setdefault("concept", [])}
    for concept in concepts:
        if concept["code"] in known:
            continue
        code_system["concept"].append(concept)
        known.add(concept["code"])
        if "property" in concept and STATUS_PROPERTY not in code_system.setdefault("property", []):
            code_system["property"].append(STATUS_PROPERTY)


def load_dcc(code_systems_by_url: dict[str, dict], dcc_dir: Path = DCC_DIR) -> list[dict]:
    value_sets = []
    for path in sorted(dcc_dir.glob("*.json")):
        if path.name in DCC_NOT_CODE_LISTS or path.name in DCC_SUPERSEDED:
            continue
        value_set, by_system = dcc_value_set(_read_json(path), path.name)
        value_sets.append(value_set)
        for system, concepts in by_system.items():
            if system not in code_systems_by_url:
                code_systems_by_url[system] = _fragment_for(system)
            _merge_concepts(code_systems_by_url[system], concepts)
    return value_sets


def load_all(data_dir: Path = DATA_DIR, dcc_dir: Path = DCC_DIR) -> tuple[list[dict], list[dict]]:
    """Return (code systems, value sets), fresh dicts each call (callers may keep them)."""
    code_systems = {cs["url"]: copy.deepcopy(cs) for cs in load_data_code_systems(data_dir)}
    value_sets = load_data_value_sets(data_dir / "valuesets")
    value_sets += [all_codes_value_set(cs) for cs in code_systems.values() if cs.get("valueSet")]
    value_sets += load_dcc(code_systems, dcc_dir)
    return list(code_systems.values()), value_sets
