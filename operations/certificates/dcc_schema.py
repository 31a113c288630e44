"""Validation of DCC payloads against the official JSON schema and value sets (vendored in
terminology/dcc/), done on every payload before it is signed.

Two validators over the same schema file:
- `validate_payload` (issuing path): the schema compiled with fastjsonschema (~15 µs a payload,
  where jsonschema takes ~200 µs, more than the ECDSA signature itself), plus the value-set check
  driven by the schema's own `valueset-uri` keywords. The official schema declares draft 2020-12
  but uses only keywords that mean the same in draft-07 (type, oneOf, anyOf, required,
  properties, items, pattern, maxLength, minimum, format, $ref into $defs), which fastjsonschema
  implements; tests check that both validators agree.
- `reference_validator()` (verification side, tests): jsonschema's Draft 2020-12 validator.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import cache, lru_cache
from pathlib import Path

import fastjsonschema
import jsonschema

DCC_DIR = Path(__file__).resolve().parents[2] / "terminology" / "dcc"
SCHEMA_FILE = DCC_DIR / "schema" / "DCC.combined-schema.json"
GROUPS = ("v", "t", "r")


class DccPayloadError(ValueError):
    """The payload does not conform; `problems` lists (DCC field path, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))


@lru_cache(maxsize=1)
def official_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


@cache
def value_set(uri: str) -> dict:
    """A value set file named by the schema's `valueset-uri` (e.g. valuesets/test-type.json)."""
    return json.loads((DCC_DIR / uri).read_text(encoding="utf-8"))["valueSetValues"]


def _def_of(schema: dict, ref: str) -> dict:
    return schema["$defs"][ref.rsplit("/", 1)[-1]]


@lru_cache(maxsize=1)
def _value_set_fields() -> dict[tuple[str, str], frozenset[str]]:
    """(group, field) -> active codes, read from the schema: e.g. ("t", "tt") -> {LP6464-4, ...}."""
    schema = official_schema()
    fields = {}
    for group in GROUPS:
        entry = _def_of(schema, schema["properties"][group]["items"]["$ref"])
        for name, prop in entry["properties"].items():
            uri = _def_of(schema, prop["$ref"]).get("valueset-uri") if "$ref" in prop else None
            if uri:
                codes = value_set(uri)
                fields[(group, name)] = frozenset(c for c, v in codes.items() if v.get("active"))
    return fields


def _is_date(value) -> bool:
    if not isinstance(value, str):
        return True  # formats constrain strings only; `type` rejects the rest
    try:
        date.fromisoformat(value)
        return len(value) == 10
    except ValueError:
        return False


def _is_date_time(value) -> bool:
    if not isinstance(value, str):
        return True
    try:
        return "T" in value and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


FORMATS = {"date": _is_date, "date-time": _is_date_time}


_ANNOTATIONS = {"description", "title", "examples", "$comment"}


def _inline_refs(node, defs: dict):
    """The schema with every `$ref` to one of its `$defs` replaced by the definition itself
    (merged with the referring object's annotations). The DCC schema's references are not
    recursive, so this means the same; fastjsonschema then checks each field in place instead
    of calling one generated function per reference (a third of its time)."""
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _inline_refs(value, defs) for key, value in node.items()}
    ref = node.pop("$ref", None)
    if ref is None:
        return node
    target = _inline_refs(defs[ref.rsplit("/", 1)[-1]], defs)
    assert not (set(node) & set(target)) - _ANNOTATIONS, f"{ref}: keywords on both sides"
    return {**target, **node}


@lru_cache(maxsize=1)
def _compiled_schema():
    """The official schema less its two "exactly one group" / "at least one standardised name"
    alternatives, checked in `_alternatives_problems` instead: fastjsonschema evaluates
    oneOf/anyOf by raising and catching an exception per failing branch, a third of its time."""
    schema = json.loads(json.dumps(official_schema()))
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    assert schema.pop("oneOf") == [{"required": ["ver", "nam", "dob", g]} for g in GROUPS]
    person_name = schema["$defs"]["person_name"]
    assert person_name.pop("anyOf") == [{"required": ["fnt"]}, {"required": ["gnt"]}]
    defs = schema.pop("$defs")
    return fastjsonschema.compile(_inline_refs(schema, defs), formats=FORMATS)


def _alternatives_problems(payload) -> list[tuple[str, str]]:
    if not isinstance(payload, dict):
        return [("$", "must be an object")]
    problems = [("$", f"missing {name}") for name in ("ver", "nam", "dob") if name not in payload]
    groups = [g for g in GROUPS if g in payload]
    if len(groups) != 1:
        problems.append(("$", f"exactly one of v, t, r is required, found {groups or 'none'}"))
    name = payload.get("nam")
    if isinstance(name, dict) and "fnt" not in name and "gnt" not in name:
        problems.append(("nam", "fnt or gnt is required"))
    return problems


@lru_cache(maxsize=1)
def _value_set_fields_by_group() -> dict[str, tuple[tuple[str, frozenset[str]], ...]]:
    """group -> ((field, active codes), ...): only the present group's fields are looked at."""
    by_group = {group: [] for group in GROUPS}
    for (group, name), codes in _value_set_fields().items():
        by_group[group].append((name, codes))
    return {group: tuple(fields) for group, fields in by_group.items()}


def value_set_problems(payload: dict) -> list[tuple[str, str]]:
    problems = []
    for group, fields in _value_set_fields_by_group().items():
        for index, entry in enumerate(payload.get(group) or ()):
            for name, codes in fields:
                if name in entry and entry[name] not in codes:
                    problems.append((f"{group}[{index}].{name}", f"'{entry[name]}' is not in the DCC value set"))
    return problems


def _dcc_path(parts: list) -> str:
    """['t', '0', 'sc'] -> 't[0].sc' (fastjsonschema gives array indexes as strings; no DCC
    property name is made of digits), the form of rules.json's fhir_expression_of_dcc_field."""
    text = "".join(f"[{p}]" if isinstance(p, int) or str(p).isdigit() else f".{p}" for p in parts).lstrip(".")
    return text or "$"


def validate_payload(payload: dict) -> None:
    """Raise DccPayloadError unless the payload conforms to the schema and value sets."""
    try:
        _compiled_schema()(payload)
    except fastjsonschema.JsonSchemaValueException as error:
        raise DccPayloadError([(_dcc_path(error.path[1:]), error.message)]) from None
    problems = _alternatives_problems(payload) or value_set_problems(payload)
    if problems:
        raise DccPayloadError(problems)


def _check_value_set(validator, uri, instance, schema):
    if isinstance(instance, str) and instance not in value_set(uri):
        yield jsonschema.ValidationError(f"{instance!r} is not in value set {uri}")


@lru_cache(maxsize=1)
def reference_validator():
    """jsonschema Draft 2020-12 validator with formats and the `valueset-uri` keyword checked."""
    base = jsonschema.Draft202012Validator
    cls = jsonschema.validators.extend(base, {"valueset-uri": _check_value_set})
    checker = jsonschema.FormatChecker()
    for name, check in FORMATS.items():
        checker.checks(name)(check)
    return cls(official_schema(), format_checker=checker)
