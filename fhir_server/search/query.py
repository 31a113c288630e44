"""Turn FHIR search parameters into a MongoDB filter, a sort and the result options.

A `SearchPlan` is plain data; fhir_server.interactions.search runs it through the store. Chained
parameters and `_has` need the ids of other resources: they ask `lookup(type, plan) -> [docs]`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

from ..outcome import FhirError, Issue
from .dates import DateFormatError, parse_range, utc_now
from .extract import reference_key
from .normalize import fold
from .registry import SORTABLE_TYPES, SearchParameter, parameters_for

RESULT_PARAMETERS = {"_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements",
                     "_format", "_pretty", "_cursor", "_contained", "_containedType"}
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SUMMARY_MODES = {"true", "false", "count", "data", "text"}
MAX_CHAIN_IDS = 10_000  # a chained or _has parameter matching more ids than this is refused


@dataclass
class Include:
    source_type: str
    param: str
    target_type: str | None = None


@dataclass
class SearchPlan:
    resource_type: str
    filter: dict
    sort: list[tuple[str, int]]
    count: int
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str | None = None  # none | estimate | accurate
    cursor: str | None = None
    warnings: list[Issue] = field(default_factory=list)
    self_params: list[tuple[str, str]] = field(default_factory=list)


def bad_parameter(name: str, en: str, fr: str | None = None) -> FhirError:
    return FhirError.of(400, "invalid", f"Search parameter '{name}': {en}",
                        f"Paramètre de recherche '{name}' : {fr or en}", name)


def split_values(raw: str) -> list[str]:
    """Comma-separated OR values, honouring the escape '\\,'."""
    parts = re.split(r"(?<!\\),", raw)
    return [p.replace("\\,", ",").replace("\\|", "|") if "\\," in p else p for p in parts]


class PlanBuilder:
    def __init__(self, base_url: str, default_count: int, max_count: int,
                 lookup: Callable[[str, "SearchPlan", str], list[dict]], strict: bool = False):
        self.base_url = base_url
        self.default_count = default_count
        self.max_count = max_count
        self.lookup = lookup
        self.strict = strict

    # -- entry point -------------------------------------------------------------------------
    def build(self, resource_type: str, pairs: list[tuple[str, str]]) -> SearchPlan:
        plan = SearchPlan(resource_type, {}, [], self.default_count)
        clauses: list[dict] = []
        for name, value in pairs:
            if name in RESULT_PARAMETERS:
                self._result_parameter(plan, name, value)
                continue
            clause = self._clause(resource_type, name, value, plan)
            if clause is not None:
                clauses.append(clause)
                plan.self_params.append((name, value))
        clauses.append({"del": False})
        plan.filter = clauses[0] if len(clauses) == 1 else {"$and": clauses}
        plan.sort = plan.sort or [("_id", 1)]
        if plan.sort[-1][0] != "_id":
            plan.sort.append(("_id", 1))  # a unique tie-breaker makes keyset paging exact
        return plan

    # -- result parameters -------------------------------------------------------------------
    def _result_parameter(self, plan: SearchPlan, name: str, value: str) -> None:
        if name == "_count":
            if not value.isdigit():
                raise bad_parameter(name, f"'{value}' is not a non-negative integer",
                                    f"'{value}' n'est pas un entier positif")
            plan.count = min(int(value), self.max_count)
            if int(value) > self.max_count:
                plan.warnings.append(Issue("warning", "informational",
                                           f"_count capped at {self.max_count}",
                                           f"_count limité à {self.max_count}", ["_count"]))
        elif name == "_sort":
            plan.sort = [self._sort_key(plan.resource_type, key) for key in value.split(",") if key]
        elif name in ("_include", "_revinclude"):
            include = self._include(name, value, plan.resource_type)
            (plan.includes if name == "_include" else plan.revincludes).append(include)
        elif name == "_summary":
            if value not in SUMMARY_MODES:
                raise bad_parameter(name, f"unknown mode '{value}'", f"mode inconnu '{value}'")
            plan.summary = value
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise bad_parameter(name, f"unknown mode '{value}'", f"mode inconnu '{value}'")
            plan.total = value
        elif name == "_elements":
            plan.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name == "_cursor":
            plan.cursor = value
        if name not in ("_cursor", "_format", "_pretty"):
            plan.self_params.append((name, value))

    def _sort_key(self, resource_type: str, key: str) -> tuple[str, int]:
        direction = -1 if key.startswith("-") else 1
        code = key.lstrip("-")
        if code == "_id":
            return "_id", direction
        if code == "_lastUpdated":
            return "ts", direction
        param = parameters_for(resource_type).get(code)
        if param is None or param.type not in SORTABLE_TYPES:
            raise bad_parameter("_sort", f"cannot sort {resource_type} by '{code}'",
                                f"tri impossible de {resource_type} par '{code}'")
        return f"o.{code}", direction

    def _include(self, name: str, value: str, resource_type: str) -> Include:
        parts = value.split(":")
        if parts[-1] == "iterate":  # _include:iterate arrives as a modifier on the name; accept both
            parts = parts[:-1]
        if len(parts) not in (2, 3):
            raise bad_parameter(name, f"'{value}' is not Type:parameter[:targetType]",
                                f"'{value}' n'est pas de la forme Type:paramètre[:typeCible]")
        source, code = parts[0], parts[1]
        param = parameters_for(source).get(code)
        if param is None or param.type != "reference":
            raise bad_parameter(name, f"'{source}:{code}' is not a reference parameter",
                                f"'{source}:{code}' n'est pas un paramètre de type référence")
        if name == "_include" and source != resource_type:
            raise bad_parameter(name, f"'{source}' is not the searched type {resource_type}",
                                f"'{source}' n'est pas le type recherché {resource_type}")
        return Include(source, code, parts[2] if len(parts) == 3 else None)

    # -- one search parameter ----------------------------------------------------------------
    def _clause(self, resource_type: str, name: str, raw: str, plan: SearchPlan) -> dict | None:
        if name.startswith("_has:"):
            return self._has(resource_type, name, raw)
        code, _, modifier = name.partition(":")
        chain = None
        if "." in code:
            code, chain = code.split(".", 1)
        elif "." in modifier:
            modifier, chain = modifier.split(".", 1)
        if code == "_id":
            return {"_id": {"$in": split_values(raw)}}
        if code == "_lastUpdated":
            return self._date(None, name, raw)
        param = parameters_for(resource_type).get(code)
        if param is None:
            return self._unknown(resource_type, name, plan)
        if chain is not None:
            return self._chain(param, modifier or None, chain, raw, name)
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise bad_parameter(name, "':missing' takes true or false", "':missing' attend true ou false")
            return {param.field: {"$exists": raw == "false"}}
        handler = getattr(self, f"_{param.type}", None)
        if handler is None:
            raise bad_parameter(name, f"type {param.type} is not searchable here",
                                f"le type {param.type} n'est pas recherchable ici")
        return handler(param, name, raw, modifier) if param.type != "date" else handler(param, name, raw)

    def _unknown(self, resource_type: str, name: str, plan: SearchPlan) -> None:
        en = f"Unknown search parameter '{name}' for {resource_type}"
        fr = f"Paramètre de recherche inconnu '{name}' pour {resource_type}"
        if self.strict:
            raise FhirError.of(400, "not-supported", en, fr, name)
        plan.warnings.append(Issue("warning", "not-supported", en + " (ignored)", fr + " (ignoré)", [name]))
        return None

    # -- by type -----------------------------------------------------------------------------
    def _string(self, param: SearchParameter, name: str, raw: str, modifier: str) -> dict:
        values = split_values(raw)
        if modifier == "exact":
            return {f"x.{param.code}": {"$in": values}}
        if modifier not in ("", "contains"):
            raise bad_parameter(name, f"unknown modifier ':{modifier}'", f"modificateur inconnu ':{modifier}'")
        anchor = "" if modifier == "contains" else "^"
        return {param.field: {"$in": [re.compile(anchor + re.escape(fold(v))) for v in values]}}

    def _token(self, param: SearchParameter, name: str, raw: str, modifier: str) -> dict:
        values = split_values(raw)
        if modifier == "text":
            return {f"x.{param.code}": {"$in": [re.compile("^" + re.escape(fold(v))) for v in values]}}
        if modifier not in ("", "not"):
            raise bad_parameter(name, f"unknown modifier ':{modifier}'", f"modificateur inconnu ':{modifier}'")
        matches = []
        for value in values:
            system, bar, code = value.rpartition("|") if "|" in value else ("", "", value)
            if bar and not code:
                matches.append(re.compile("^" + re.escape(system) + r"\|"))
            elif bar:
                matches.append(f"{system}|{code}")
            else:
                matches.append(code)
        return {param.field: {"$nin" if modifier == "not" else "$in": matches}}

    def _uri(self, param: SearchParameter, name: str, raw: str, modifier: str) -> dict:
        values = split_values(raw)
        if modifier == "below":
            return {param.field: {"$in": [re.compile("^" + re.escape(v)) for v in values]}}
        return {param.field: {"$in": values}}

    def _reference(self, param: SearchParameter, name: str, raw: str, modifier: str) -> dict:
        if modifier and modifier not in parameters_for_all_types() and modifier != "identifier":
            raise bad_parameter(name, f"unknown modifier ':{modifier}'", f"modificateur inconnu ':{modifier}'")
        if modifier == "identifier":
            raise bad_parameter(name, "':identifier' is not supported", "':identifier' n'est pas pris en charge")
        keys: list[str] = []
        for value in split_values(raw):
            key = reference_key(value, self.base_url)
            if "/" in key or "://" in key:
                keys.append(key)
            elif modifier:
                keys.append(f"{modifier}/{key}")
            else:
                keys += [f"{target}/{key}" for target in (param.target or parameters_for_all_types())]
        return {param.field: {"$in": keys}}

    def _date(self, param: SearchParameter | None, name: str, raw: str) -> dict:
        alternatives = []
        for value in split_values(raw):
            prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
            text = value[2:] if value[:2] in DATE_PREFIXES else value
            try:
                lo, hi = parse_range(text)
            except DateFormatError as exc:
                raise bad_parameter(name, str(exc), f"'{text}' n'est pas une date FHIR valide") from None
            alternatives.append(date_condition(param.field if param else None, prefix, lo, hi))
        return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}

    # -- chains and reverse chains -----------------------------------------------------------
    def _chain(self, param: SearchParameter, type_modifier: str | None, chain: str, raw: str,
               name: str) -> dict:
        if param.type != "reference":
            raise bad_parameter(name, "only reference parameters can be chained",
                                "seuls les paramètres de type référence peuvent être chaînés")
        targets = [type_modifier] if type_modifier else [t for t in param.target if parameters_for(t)]
        keys = []
        for target in targets:
            sub = self.build(target, [(chain, raw)])
            keys += [f"{target}/{doc['_id']}" for doc in self._ids(target, sub, name)]
        return {param.field: {"$in": keys}}

    def _has(self, resource_type: str, name: str, raw: str) -> dict:
        parts = name.split(":", 3)
        if len(parts) != 4:
            raise bad_parameter(name, "expected _has:Type:reference:parameter",
                                "forme attendue _has:Type:référence:paramètre")
        _, source, ref_code, rest = parts
        ref = parameters_for(source).get(ref_code)
        if ref is None or ref.type != "reference":
            raise bad_parameter(name, f"'{source}:{ref_code}' is not a reference parameter",
                                f"'{source}:{ref_code}' n'est pas un paramètre de type référence")
        sub = self.build(source, [(rest, raw)])
        prefix = resource_type + "/"
        ids = {ref_key[len(prefix):] for doc in self._ids(source, sub, name, f"s.{ref_code}")
               for ref_key in doc.get("s", {}).get(ref_code, []) if ref_key.startswith(prefix)}
        return {"_id": {"$in": sorted(ids)}}

    def _ids(self, resource_type: str, plan: SearchPlan, name: str, projection: str = "_id") -> list[dict]:
        docs = self.lookup(resource_type, plan, projection)
        if len(docs) > MAX_CHAIN_IDS:
            raise bad_parameter(name, f"matches more than {MAX_CHAIN_IDS} resources; narrow it",
                                f"correspond à plus de {MAX_CHAIN_IDS} ressources ; précisez-le")
        return docs


def parameters_for_all_types() -> set[str]:
    from .registry import load
    return set(load())


def date_condition(field_name: str | None, prefix: str, lo, hi) -> dict:
    """The condition for `prefix` against the searched range [lo, hi].

    `field_name` is an array of {lo, hi} ranges (matched with $elemMatch); None means the
    scalar `ts` (meta.lastUpdated), a range of one instant.
    """
    if prefix == "ap":
        margin = max(abs(utc_now() - lo) * 0.1, timedelta(days=1))
        lo, hi, prefix = lo - margin, hi + margin, "overlap"
    bounds = {
        "eq": [("lo", "$gte", lo), ("hi", "$lte", hi)],
        "ne": [("lo", "$gte", lo), ("hi", "$lte", hi)],
        "gt": [("hi", "$gt", hi)],
        "lt": [("lo", "$lt", lo)],
        "ge": [("hi", "$gte", lo)],
        "le": [("lo", "$lte", hi)],
        "sa": [("lo", "$gt", hi)],
        "eb": [("hi", "$lt", lo)],
        "overlap": [("lo", "$lte", hi), ("hi", "$gte", lo)],
    }[prefix]
    if field_name is None:
        condition: dict = {}
        for _end, op, value in bounds:
            condition[op] = value
        return {"ts": {"$not": condition}} if prefix == "ne" else {"ts": condition}
    element: dict = {}
    for end, op, value in bounds:
        element.setdefault(end, {})[op] = value
    if prefix == "ne":
        return {field_name: {"$exists": True, "$not": {"$elemMatch": element}}}
    return {field_name: {"$elemMatch": element}}
