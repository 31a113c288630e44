"""Index fields extracted at write time and stored with each resource.

For each search parameter the document gets:
  s.<code>   values the query matches: folded strings, tokens as "code", "system|code" and
             "|code" (no system; a '|' or '\\' inside a system or code escaped by a backslash),
             references as "Type/id", dates as {lo, hi} ranges;
  x.<code>   the exact strings (string :exact) and folded token texts (token :text);
  o.<code>   two scalar sort keys, used by _sort and keyset paging (which cannot work on arrays):
             `lo` the smallest value (earliest start of a date), which an ascending sort uses, and
             `hi` the greatest (latest end of a date), which a descending sort uses, as R4 sorts a
             repeating element by the value that comes first in the requested order.
Only parameters with values are written, so :missing is a test of existence.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from profiles.base_validation import relative_reference
from profiles.engine import normalise_resource

from .dates import DateFormatError, parse_range, period_range
from .normalize import fold
from .registry import PathStep, SearchParameter, parameters_for

# The string parts of HumanName and Address that string search matches.
_STRING_PARTS = (
    "family",
    "given",
    "prefix",
    "suffix",
    "text",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
)


def walk(resource: dict, steps: tuple[PathStep, ...]) -> list[Any]:
    values: list[Any] = [resource]
    for step in steps:
        found: list[Any] = []
        for value in values:
            if isinstance(value, dict) and step.name in value:
                item = value[step.name]
                found.extend(item if isinstance(item, list) else [item])
        if step.where_key:
            found = [v for v in found if isinstance(v, dict) and v.get(step.where_key) == step.where_value]
        values = found
    return values


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for part in _STRING_PARTS:
            item = value.get(part)
            for s in item if isinstance(item, list) else [item]:
                if isinstance(s, str):
                    yield s


def token_part(text: str) -> str:
    """A system or code as stored in a token: a bar or backslash in it escaped as in a search value,
    so that the code 'a|b' never reads as the system 'a' and the code 'b'."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _coding_tokens(system: str | None, code: Any) -> list[str]:
    if code is None:
        return []
    code = token_part(str(code).lower() if isinstance(code, bool) else str(code))
    return [code, f"{token_part(system)}|{code}"] if system else [code, f"|{code}"]


def _tokens(value: Any) -> tuple[list[str], list[str]]:
    """(tokens, texts) of one element: Coding, CodeableConcept, Identifier, ContactPoint, code."""
    if isinstance(value, (str, bool)):
        return _coding_tokens(None, value), []
    if not isinstance(value, dict):
        return [], []
    tokens: list[str] = []
    texts: list[str] = []
    if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
        for coding in value.get("coding", []):
            tokens += _coding_tokens(coding.get("system"), coding.get("code"))
            if coding.get("display"):
                texts.append(coding["display"])
        if value.get("text"):
            texts.append(value["text"])
    elif "code" in value:  # Coding
        tokens += _coding_tokens(value.get("system"), value["code"])
        if value.get("display"):
            texts.append(value["display"])
    elif "value" in value:  # Identifier, ContactPoint
        tokens += _coding_tokens(value.get("system"), value["value"])
        normalised = normalise_resource({"system": value.get("system"), "value": value["value"]})
        if normalised["value"] != value["value"] or normalised["system"] != value.get("system"):
            # also findable in the form the SI-DEP write path stores (E.164, current FINESS system),
            # whatever the server's mode: searches are normalised the same way (query.stored_forms)
            tokens += _coding_tokens(normalised["system"], normalised["value"])
        type_text = (value.get("type") or {}).get("text") if isinstance(value.get("type"), dict) else None
        if type_text:
            texts.append(type_text)
    return tokens, texts


def reference_key(reference: str, base_url: str | None) -> str:
    """'http://this-server/fhir/Patient/1/_history/2' -> 'Patient/1'; other URLs, and anything
    that is not a reference of the server's grammar (profiles.base_validation), kept whole."""
    if base_url and reference.startswith(base_url + "/"):
        reference = reference[len(base_url) + 1 :]
    target = relative_reference(reference)
    return f"{target[0]}/{target[1]}" if target else reference


def _references(value: Any, param: SearchParameter, base_url: str | None) -> list[str]:
    if isinstance(value, dict):
        value = value.get("reference")
    if not isinstance(value, str):
        return []
    key = reference_key(value, base_url)
    if param.target and "/" in key and "://" not in key and key.split("/")[0] not in param.target:
        return []
    return [key]


def _date_ranges(value: Any) -> list[dict]:
    try:
        if isinstance(value, str):
            lo, hi = parse_range(value)
        elif isinstance(value, dict) and ("start" in value or "end" in value):
            lo, hi = period_range(value)
        elif isinstance(value, dict) and "event" in value:  # Timing
            return [r for e in value["event"] for r in _date_ranges(e)]
        else:
            return []
    except DateFormatError:
        return []
    return [{"lo": lo, "hi": hi}]


def index_fields(resource_type: str, resource: dict, base_url: str | None = None) -> dict:
    """{'s': {...}, 'x': {...}, 'o': {...}} for one resource."""
    s: dict[str, list] = {}
    x: dict[str, list] = {}
    o: dict[str, Any] = {}
    for code, param in parameters_for(resource_type).items():
        values = [v for path in param.paths for v in walk(resource, path)]
        if not values:
            continue
        matched: list = []
        exact: list = []
        if param.type == "string":
            exact = [t for v in values for t in _strings(v)]
            matched = sorted({fold(t) for t in exact})
        elif param.type == "token":
            for v in values:
                tokens, texts = _tokens(v)
                matched += tokens
                exact += [fold(t) for t in texts]
        elif param.type == "reference":
            matched = [r for v in values for r in _references(v, param, base_url)]
        elif param.type == "date":
            matched = [r for v in values for r in _date_ranges(v)]
        elif param.type == "uri":
            matched = [v for v in values if isinstance(v, str)]
        elif param.type in ("number", "quantity"):
            matched = [v.get("value") if isinstance(v, dict) else v for v in values]
            matched = [float(m) for m in matched if isinstance(m, (int, float, Decimal))]
        if not matched and not exact:
            continue
        # a CodeableConcept with only text has no code to match, but it is there (not :missing)
        # and :text finds it: s.<code> is written, empty
        s[code] = _dedupe(matched) if param.type != "date" else matched
        if exact:
            x[code] = _dedupe(exact)
        if matched:
            o[code] = sort_keys(param.type, matched)
    return {"s": s, "x": x, "o": o}


def _dedupe(items: list) -> list:
    return list(dict.fromkeys(items))


def sort_keys(param_type: str, matched: list) -> dict:
    """{'lo': smallest, 'hi': greatest} of one parameter's extracted values."""
    if param_type == "date":
        return {"lo": min(r["lo"] for r in matched), "hi": max(r["hi"] for r in matched)}
    if param_type == "token":  # the bare code, never the system-qualified form
        matched = [t for t in matched if "|" not in t] or matched
    return {"lo": min(matched), "hi": max(matched)}
