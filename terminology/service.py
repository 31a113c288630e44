"""In-memory terminology service: $lookup, $validate-code and $expand over the loaded code lists.

All value sets are expanded once at load time (they are small), so every question is a dict lookup.
`reload()` builds a complete new index and swaps it in with one assignment: concurrent readers see either
the old or the new code lists, never a mix.
"""

from __future__ import annotations

import threading
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import loader


class UnknownValueSet(LookupError):
    """The value set URL (or id) is not loaded."""


@dataclass(frozen=True)
class Concept:
    system: str
    code: str
    display: str | None
    designations: dict = field(default_factory=dict)  # language -> display
    properties: dict = field(default_factory=dict)  # property code -> value (str/bool/number)
    search_text: str = ""  # folded code + displays, for $expand filter

    def display_in(self, lang: str = "en") -> str | None:
        return self.designations.get(lang) or self.display

    def matches_display(self, display: str) -> bool:
        wanted = display.strip().casefold()
        return any(d and d.strip().casefold() == wanted for d in (self.display, *self.designations.values()))


def fold(text: str) -> str:
    """Case- and accent-insensitive form, so that a filter 'serologie' finds 'Sérologie'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def french_title(resource: dict) -> str | None:
    """The French title carried by the standard translation extension on `_title`, if any."""
    for ext in (resource.get("_title") or {}).get("extension", []):
        parts = {e.get("url"): e for e in ext.get("extension", [])}
        if parts.get("lang", {}).get("valueCode") == "fr":
            return parts.get("content", {}).get("valueString")
    return None


def _property_value(prop: dict):
    for key, value in prop.items():
        if key.startswith("value"):
            return value
    return None


def _concept_from(system: str, raw: dict) -> Concept:
    designations = {d["language"]: d["value"] for d in raw.get("designation", []) if d.get("language")}
    properties = {p["code"]: _property_value(p) for p in raw.get("property", [])}
    texts = [raw["code"], raw.get("display") or "", *designations.values()]
    return Concept(system, raw["code"], raw.get("display"), designations, properties, fold(" ".join(texts)))


def _walk_concepts(concepts: list[dict]):
    """CodeSystem concepts may nest (hierarchies); flatten them."""
    for raw in concepts:
        yield raw
        yield from _walk_concepts(raw.get("concept", []))


def _filter_matches(concept: Concept, flt: dict) -> bool:
    prop, op, value = flt.get("property"), flt.get("op"), flt.get("value", "")
    actual = concept.code if prop in ("code", "concept") else concept.properties.get(prop)
    if op == "=":
        shown = str(actual).lower() if isinstance(actual, bool) else actual  # JSON true -> "true"
        return actual is not None and str(shown) == value
    if op == "in":
        return actual in {v.strip() for v in value.split(",")}
    if op == "not-in":
        return actual not in {v.strip() for v in value.split(",")}
    if op == "exists":
        return (actual is not None) == (value.lower() == "true")
    if op == "is-a" and prop in ("code", "concept"):  # our fragments carry no hierarchy
        return concept.code == value
    raise ValueError(f"unsupported value-set filter op {op!r} on property {prop!r}")


class _Index:
    """One immutable snapshot of every code system and value set."""

    def __init__(self, code_systems: list[dict], value_sets: list[dict]):
        self.code_systems = {cs["url"]: cs for cs in code_systems}
        self.concepts = {
            cs["url"]: {raw["code"]: _concept_from(cs["url"], raw) for raw in _walk_concepts(cs.get("concept", []))}
            for cs in code_systems
        }
        self.value_sets = {vs["url"]: vs for vs in value_sets}
        self.value_set_ids = {vs["id"]: vs["url"] for vs in value_sets if vs.get("id")}
        self.members: dict[str, dict[tuple[str, str], Concept]] = {}
        for url in self.value_sets:
            self._expand_compose(url, set())
        # system-less membership (for `code`-typed elements whose system is implied by the binding)
        self.members_by_code = {url: {code: c for (_, code), c in m.items()} for url, m in self.members.items()}

    def _expand_compose(self, url: str, visiting: set) -> dict:
        if url in self.members:
            return self.members[url]
        if url in visiting:
            raise ValueError(f"value set {url} includes itself")
        visiting.add(url)
        compose = self.value_sets[url].get("compose", {})
        members: dict[tuple[str, str], Concept] = {}
        for include in compose.get("include", []):
            members.update(self._select(include, visiting))
        for exclude in compose.get("exclude", []):
            for key in self._select(exclude, visiting):
                members.pop(key, None)
        self.members[url] = members
        return members

    def _select(self, rule: dict, visiting: set) -> dict:
        selected: dict[tuple[str, str], Concept] | None = None
        system = rule.get("system")
        if system:
            known = self.concepts.get(system, {})
            if rule.get("concept"):
                candidates = [
                    known.get(c["code"])
                    or Concept(
                        system,
                        c["code"],
                        c.get("display"),
                        search_text=fold(c["code"] + " " + (c.get("display") or "")),
                    )
                    for c in rule["concept"]
                ]
            else:
                candidates = list(known.values())
            for flt in rule.get("filter", []):
                candidates = [c for c in candidates if _filter_matches(c, flt)]
            selected = {(c.system, c.code): c for c in candidates}
        for imported in rule.get("valueSet", []):
            if imported not in self.value_sets:
                raise ValueError(f"value set imports unknown value set {imported}")
            other = self._expand_compose(imported, visiting)
            selected = dict(other) if selected is None else {k: v for k, v in selected.items() if k in other}
        return selected or {}


class TerminologyService:
    def __init__(self, data_dir=None, dcc_dir=None):
        self._data_dir = data_dir or loader.DATA_DIR
        self._dcc_dir = dcc_dir or loader.DCC_DIR
        self._index = self._build()

    def _build(self) -> _Index:
        code_systems, value_sets = loader.load_all(self._data_dir, self._dcc_dir)
        return _Index(code_systems, value_sets)

    def reload(self) -> dict:
        """Re-read the code lists from disk and swap them in; returns counts of what was loaded."""
        self._index = self._build()
        return self.summary()

    def summary(self) -> dict:
        idx = self._index
        return {
            "codeSystems": {url: len(c) for url, c in idx.concepts.items()},
            "valueSets": {url: len(m) for url, m in idx.members.items()},
        }

    def all_resources(self) -> list[dict]:
        """CodeSystem and ValueSet resources, for the server to store at start."""
        idx = self._index
        return list(idx.code_systems.values()) + list(idx.value_sets.values())

    # --- questions the profile engine asks, on the hot path ---------------------------------------

    def has_value_set(self, url: str) -> bool:
        return url in self._index.value_sets

    def value_set(self, url_or_id: str) -> dict:
        idx = self._index
        url = url_or_id if url_or_id in idx.value_sets else idx.value_set_ids.get(url_or_id)
        if url is None:
            raise UnknownValueSet(url_or_id)
        return idx.value_sets[url]

    def contains(self, valueset_url: str, system: str | None, code: str) -> Concept | None:
        idx = self._index
        if valueset_url not in idx.members:
            raise UnknownValueSet(valueset_url)
        if system is None:
            return idx.members_by_code[valueset_url].get(code)
        return idx.members[valueset_url].get((system, code))

    def concept(self, system: str, code: str) -> Concept | None:
        return self._index.concepts.get(system, {}).get(code)

    def members(self, valueset_url: str) -> list[Concept]:
        idx = self._index
        if valueset_url not in idx.members:
            raise UnknownValueSet(valueset_url)
        return list(idx.members[valueset_url].values())

    # --- the three terminology operations --------------------------------------------------------

    def lookup(self, system: str, code: str, lang: str = "en") -> dict | None:
        idx = self._index
        concept = idx.concepts.get(system, {}).get(code)
        if concept is None:
            return None
        cs = idx.code_systems[system]
        return {
            "name": cs.get("title") or cs.get("name"),
            "version": cs.get("version"),
            "display": concept.display_in(lang),
            "code": code,
            "system": system,
            "designations": dict(concept.designations),
            "properties": dict(concept.properties),
        }

    def validate_code(
        self, valueset_url: str, system: str | None, code: str, display: str | None = None, lang: str = "en"
    ) -> dict:
        """{"result": bool, "message": str|None, "message_fr": str|None, "display": str|None}."""
        vs = self.value_set(valueset_url)
        concept = self.contains(vs["url"], system, code)
        title = vs.get("title") or vs["url"]
        if concept is None:
            where = f" ({system})" if system else ""
            return {
                "result": False,
                "display": None,
                "message": f"The code '{code}'{where} is not in the value set '{title}'",
                "message_fr": f"Le code « {code} »{where} n'appartient pas au jeu de valeurs "
                f"« {french_title(vs) or title} »",
            }
        if display and not concept.matches_display(display):
            expected = concept.display_in(lang)
            return {
                "result": False,
                "display": expected,
                "message": f"The display '{display}' is not a display of code '{code}' (expected '{concept.display}')",
                "message_fr": f"Le libellé « {display} » ne correspond pas au code « {code} » "
                f"(attendu « {concept.display_in('fr')} »)",
            }
        return {"result": True, "display": concept.display_in(lang), "message": None, "message_fr": None}

    def expand(
        self,
        valueset_url: str,
        filter: str | None = None,
        count: int | None = None,
        offset: int | None = None,
        lang: str = "en",
    ) -> dict:
        vs = self.value_set(valueset_url)
        concepts = self.members(vs["url"])
        if filter:
            needle = fold(filter)
            concepts = [c for c in concepts if needle in c.search_text]
        total, start = len(concepts), max(int(offset or 0), 0)
        page = concepts[start:] if count is None else concepts[start : start + max(int(count), 0)]
        parameters = [
            {"name": name, value_key: value}
            for name, value_key, value in (
                ("filter", "valueString", filter),
                ("count", "valueInteger", count),
                ("offset", "valueInteger", offset),
                ("displayLanguage", "valueCode", lang),
            )
            if value is not None
        ]
        expansion = {
            "identifier": f"urn:uuid:{uuid.uuid4()}",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "total": total,
            "offset": start,
            "parameter": parameters,
            "contains": [self._contains_entry(c, lang) for c in page],
        }
        result = {key: value for key, value in vs.items() if key != "compose"}
        result["expansion"] = expansion
        return result

    @staticmethod
    def _contains_entry(concept: Concept, lang: str) -> dict:
        entry = {"system": concept.system, "code": concept.code}
        display = concept.display_in(lang)
        if display:
            entry["display"] = display
        if concept.designations:
            entry["designation"] = [{"language": lang, "value": v} for lang, v in concept.designations.items()]
        return entry


_service: TerminologyService | None = None
_service_lock = threading.Lock()


def get_service() -> TerminologyService:
    """The process-wide service, loaded on first use (operations and the profile engine share it)."""
    global _service
    if _service is None:
        with _service_lock:
            if _service is None:
                _service = TerminologyService()
    return _service
