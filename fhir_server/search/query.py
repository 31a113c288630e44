"""Turn FHIR search parameters into a storage condition (storage/conditions.py), a sort and the
result options.

A `SearchPlan` is plain data; fhir_server.interactions.search runs it through the store. Chained
parameters and `_has` need the ids of other resources: they ask `lookup(type, plan) -> [docs]`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from terminology.r4_definitions import resource_types

from ..outcome import FhirError, Issue
from ..storage.conditions import NOTHING, any_of, combine, date_condition, ids_in, matching, none_of, one_of, present
from .dates import DateFormatError, parse_range
from .extract import reference_key, token_part
from .normalize import fold
from .registry import SORTABLE_TYPES, SearchParameter, parameters_for

RESULT_PARAMETERS = {
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_total",
    "_elements",
    "_format",
    "_pretty",
    "_cursor",
    "_contained",
    "_containedType",
}
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
    return FhirError.of(
        400, "invalid", f"Search parameter '{name}': {en}", f"Paramètre de recherche '{name}' : {fr or en}", name
    )


def split_values(raw: str) -> list[str]:
    """Comma-separated OR values, unescaped ('\\,' '\\|' '\\$' '\\\\': R4 "Escaping Search Parameters")."""
    return [unescape(part) for part in split_escaped(raw, ",")]


def split_escaped(text: str, separator: str, maxsplit: int = -1) -> list[str]:
    """`text` split on the separators no backslash escapes; the parts keep their escapes."""
    parts, current, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == separator and maxsplit != 0:
            parts.append("".join(current))
            current, maxsplit = [], maxsplit - 1
        else:
            current.append(char)
        i += 1
    return parts + ["".join(current)]


def unescape(text: str) -> str:
    return re.sub(r"\\([\\,$|])", r"\1", text)


class PlanBuilder:
    def __init__(
        self,
        base_url: str,
        default_count: int,
        max_count: int,
        lookup: Callable[[str, "SearchPlan", str], list[dict]],
        strict: bool = False,
        max_value_length: int = 256,
    ):
        self.base_url = base_url
        self.default_count = default_count
        self.max_count = max_count
        self.lookup = lookup
        self.strict = strict
        self.max_value_length = max_value_length

    # -- entry point -------------------------------------------------------------------------
    def build(self, resource_type: str, pairs: list[tuple[str, str]]) -> SearchPlan:
        plan = SearchPlan(resource_type, {}, [], self.default_count)
        clauses: list[dict] = []
        for name, value in pairs:
            self._check_length(name, value)
            if name in RESULT_PARAMETERS:
                self._result_parameter(plan, name, value)
                continue
            clause = self._clause(resource_type, name, value, plan)
            if clause is not None:
                clauses.append(clause)
                plan.self_params.append((name, value))
        plan.filter = combine(clauses)
        plan.sort = plan.sort or [("_id", 1)]
        if plan.sort[-1][0] != "_id":
            plan.sort.append(("_id", 1))  # a unique tie-breaker makes keyset paging exact
        return plan

    def _check_length(self, name: str, value: str) -> None:
        """Names and values within the limit, also once folded as string search matches them: the
        database caps the regular expressions they become. The paging cursor is the server's own."""
        limit = self.max_value_length
        if name == "_cursor":
            return
        if len(name) > limit:
            raise FhirError.of(
                400,
                "too-costly",
                f"A search parameter name of {len(name)} characters is over the limit of {limit}",
                f"Un nom de paramètre de recherche de {len(name)} caractères dépasse la limite de {limit}",
                name[:limit],
            )
        if len(value) > limit or len(fold(value)) > limit:
            raise bad_parameter(
                name,
                f"a value of {len(value)} characters is over the limit of {limit}",
                f"une valeur de {len(value)} caractères dépasse la limite de {limit}",
            )

    # -- result parameters -------------------------------------------------------------------
    def _result_parameter(self, plan: SearchPlan, name: str, value: str) -> None:
        if name == "_count":
            if not (value.isascii() and value.isdigit()):
                raise bad_parameter(
                    name, f"'{value}' is not a non-negative integer", f"'{value}' n'est pas un entier positif"
                )
            plan.count = min(int(value), self.max_count)
            if int(value) > self.max_count:
                plan.warnings.append(
                    Issue(
                        "warning",
                        "informational",
                        f"_count capped at {self.max_count}",
                        f"_count limité à {self.max_count}",
                        ["_count"],
                    )
                )
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
            raise bad_parameter(
                "_sort", f"cannot sort {resource_type} by '{code}'", f"tri impossible de {resource_type} par '{code}'"
            )
        return sort_field(code, direction), direction

    def _include(self, name: str, value: str, resource_type: str) -> Include:
        parts = value.split(":")
        if parts[-1] == "iterate":  # _include:iterate arrives as a modifier on the name; accept both
            parts = parts[:-1]
        if len(parts) not in (2, 3):
            raise bad_parameter(
                name,
                f"'{value}' is not Type:parameter[:targetType]",
                f"'{value}' n'est pas de la forme Type:paramètre[:typeCible]",
            )
        source, code = parts[0], parts[1]
        param = parameters_for(source).get(code)
        if param is None or param.type != "reference":
            raise bad_parameter(
                name,
                f"'{source}:{code}' is not a reference parameter",
                f"'{source}:{code}' n'est pas un paramètre de type référence",
            )
        if name == "_include" and source != resource_type:
            raise bad_parameter(
                name,
                f"'{source}' is not the searched type {resource_type}",
                f"'{source}' n'est pas le type recherché {resource_type}",
            )
        return Include(source, code, parts[2] if len(parts) == 3 else None)

    # -- one search parameter ----------------------------------------------------------------
    def _clause(self, resource_type: str, name: str, raw: str, plan: SearchPlan) -> dict | None:
        if name.startswith("_has:"):
            return self._has(resource_type, name, raw)
        # 'subject:Patient.name:exact': the chain starts at the first '.', so a modifier of the
        # chained parameter stays with it instead of being taken as the type modifier.
        head, dot, chain_rest = name.partition(".")
        code, _, modifier = head.partition(":")
        chain = chain_rest if dot else None
        if code == "_id":
            if modifier or chain is not None:
                raise bad_parameter(name, "'_id' takes no modifier", "'_id' ne prend pas de modificateur")
            return one_of("_id", split_values(raw))
        if code == "_lastUpdated":
            return self._date(None, name, raw)
        param = parameters_for(resource_type).get(code)
        if param is None:
            self._unknown(resource_type, name, plan)
            return None
        if chain is not None:
            return self._chain(param, modifier or None, chain, raw, name)
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise bad_parameter(name, "':missing' takes true or false", "':missing' attend true ou false")
            return present(param.field, raw == "false")
        handler = getattr(self, f"_{param.type}", None)
        if handler is None:
            raise bad_parameter(
                name, f"type {param.type} is not searchable here", f"le type {param.type} n'est pas recherchable ici"
            )
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
            return one_of(f"x.{param.code}", values)
        if modifier not in ("", "contains"):
            raise bad_parameter(name, f"unknown modifier ':{modifier}'", f"modificateur inconnu ':{modifier}'")
        anchor = "" if modifier == "contains" else "^"
        return matching(param.field, anchor, [re.escape(fold(v)) for v in values])

    def _token(self, param: SearchParameter, name: str, raw: str, modifier: str) -> dict:
        if modifier == "text":
            return matching(f"x.{param.code}", "^", [re.escape(fold(v)) for v in split_values(raw)])
        if modifier not in ("", "not"):
            raise bad_parameter(name, f"unknown modifier ':{modifier}'", f"modificateur inconnu ':{modifier}'")
        exact: list[str] = []
        systems: list[str] = []  # 'system|': any code of that system
        for value in split_escaped(raw, ","):  # unescaped once split on '|' (_split_token)
            system, bar, code = _split_token(value)
            if bar and not code:
                if not system:
                    raise bad_parameter(name, "'|' alone is not a token", "'|' seul n'est pas un jeton")
                systems.append(system)
            elif bar:
                exact += [f"{token_part(s or '')}|{token_part(c)}" for s, c in stored_forms(param, system, code)]
            else:
                exact += [token_part(c) for _, c in stored_forms(param, None, code)]
        exact = _dedupe(exact)
        if systems:
            patterns = [re.escape(v) + "$" for v in exact] + [re.escape(token_part(s)) + r"\|" for s in systems]
            return matching(param.field, "^", patterns, negated=modifier == "not")
        if modifier == "not":
            return none_of(param.field, exact)
        return one_of(param.field, exact)

    def _uri(self, param: SearchParameter, name: str, raw: str, modifier: str) -> dict:
        values = split_values(raw)
        if modifier == "below":
            return matching(param.field, "^", [re.escape(v) for v in values])
        if modifier:
            raise bad_parameter(name, f"unknown modifier ':{modifier}'", f"modificateur inconnu ':{modifier}'")
        return one_of(param.field, values)

    def _reference(self, param: SearchParameter, name: str, raw: str, modifier: str) -> dict:
        if modifier == "identifier":
            raise bad_parameter(name, "':identifier' is not supported", "':identifier' n'est pas pris en charge")
        if modifier:
            _check_target_type(param, name, modifier)
        keys: list[str] = []
        for value in split_values(raw):
            key = reference_key(value, self.base_url)
            if "/" in key or "://" in key:
                keys.append(key)
            elif modifier:
                keys.append(f"{modifier}/{key}")
            else:
                keys += [f"{target}/{key}" for target in (param.target or sorted(parameters_for_all_types()))]
        return one_of(param.field, _dedupe(keys))

    def _date(self, param: SearchParameter | None, name: str, raw: str) -> dict:
        alternatives = []
        for value in split_values(raw):
            prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
            text = value[2:] if value[:2] in DATE_PREFIXES else value
            # an unencoded '+' of a time zone arrives as a space: '2021-03-04T23:30:00 02:00'
            text = re.sub(r"(T[\d:.]+) (\d{2}:\d{2})$", r"\1+\2", text.strip())
            try:
                lo, hi = parse_range(text)
            except DateFormatError as exc:
                raise bad_parameter(name, str(exc), f"'{text}' n'est pas une date FHIR valide") from None
            alternatives.append(date_condition(param.field if param else None, prefix, lo, hi))
        return any_of(*alternatives)

    # -- chains and reverse chains -----------------------------------------------------------
    def _chain(self, param: SearchParameter, type_modifier: str | None, chain: str, raw: str, name: str) -> dict:
        if param.type != "reference":
            raise bad_parameter(
                name,
                "only reference parameters can be chained",
                "seuls les paramètres de type référence peuvent être chaînés",
            )
        if type_modifier:
            _check_target_type(param, name, type_modifier)
        targets = [type_modifier] if type_modifier else param.target
        keys = []
        for target in [t for t in targets if parameters_for(t)]:  # no resource of another type is here
            sub = self._sub_plan(target, chain, raw, name)
            keys += [f"{target}/{doc['_id']}" for doc in self._ids(target, sub, name)]
        return one_of(param.field, keys) if keys else NOTHING

    def _sub_plan(self, resource_type: str, name: str, raw: str, outer: str) -> SearchPlan:
        """The plan of a chained or _has parameter. An unknown inner parameter is an error even in
        lenient mode: ignoring it would match every resource of the type."""
        if name in RESULT_PARAMETERS:
            raise bad_parameter(outer, f"'{name}' cannot be chained", f"'{name}' ne peut pas être chaîné")
        strict, self.strict = self.strict, True
        try:
            return self.build(resource_type, [(name, raw)])
        except FhirError as exc:
            issue = exc.issues[0]
            raise FhirError.of(
                exc.status, issue.code, f"{outer}: {issue.en}", f"{outer} : {issue.fr or issue.en}", outer
            ) from None
        finally:
            self.strict = strict

    def _has(self, resource_type: str, name: str, raw: str) -> dict:
        parts = name.split(":", 3)
        if len(parts) != 4:
            raise bad_parameter(
                name, "expected _has:Type:reference:parameter", "forme attendue _has:Type:référence:paramètre"
            )
        _, source, ref_code, rest = parts
        ref = parameters_for(source).get(ref_code)
        if ref is None or ref.type != "reference":
            raise bad_parameter(
                name,
                f"'{source}:{ref_code}' is not a reference parameter",
                f"'{source}:{ref_code}' n'est pas un paramètre de type référence",
            )
        sub = self._sub_plan(source, rest, raw, name)
        prefix = resource_type + "/"
        ids = {
            ref_key[len(prefix) :]
            for doc in self._ids(source, sub, name, f"s.{ref_code}")
            for ref_key in doc.get("s", {}).get(ref_code, [])
            if ref_key.startswith(prefix)
        }
        return ids_in(sorted(ids))

    def _ids(self, resource_type: str, plan: SearchPlan, name: str, projection: str = "_id") -> list[dict]:
        docs = self.lookup(resource_type, plan, projection)
        if len(docs) > MAX_CHAIN_IDS:
            raise bad_parameter(
                name,
                f"matches more than {MAX_CHAIN_IDS} resources; narrow it",
                f"correspond à plus de {MAX_CHAIN_IDS} ressources ; précisez-le",
            )
        return docs


def _check_target_type(param: SearchParameter, name: str, type_name: str) -> None:
    """A `:[type]` modifier names one of the parameter's R4 targets (any R4 resource type for a
    reference to Any), whether this server hosts that type or not."""
    if type_name not in resource_types():
        raise bad_parameter(name, f"unknown modifier ':{type_name}'", f"modificateur inconnu ':{type_name}'")
    if param.target and type_name not in param.target:
        raise bad_parameter(
            name,
            f"'{type_name}' is not a target type of '{param.code}'",
            f"'{type_name}' n'est pas un type cible de '{param.code}'",
        )


def sort_field(code: str, direction: int) -> str:
    """The stored key a sort on `code` uses: each resource's smallest value ascending, its greatest
    descending (see search.extract)."""
    return f"o.{code}.{'lo' if direction == 1 else 'hi'}"


def parameters_for_all_types() -> set[str]:
    from .registry import load

    return set(load())


def _split_token(value: str) -> tuple[str, str, str]:
    """'system|code' -> (system, '|', code); 'code' -> ('', '', code); `value` still escaped, so
    '\\|' is a bar in the code, not the separator."""
    parts = [unescape(part) for part in split_escaped(value, "|", maxsplit=1)]
    if len(parts) == 1:
        return "", "", parts[0]
    return parts[0], "|", parts[1]


def stored_forms(param: SearchParameter, system: str | None, code: str) -> list[tuple[str | None, str]]:
    """(system, code) as searched, and as the write path stores it when it normalises the value
    (phones in E.164, the current FINESS system: profiles.engine.normalise_resource), so that a
    search written the way the data was sent finds it."""
    from profiles.engine import normalise_resource

    forms = [(system, code)]
    contact = system or _path_system(param)
    candidates = [contact] if contact else (["phone"] if _ends_at(param, "telecom") else [])
    for candidate in candidates:
        stored = normalise_resource({"system": candidate, "value": code})
        value = stored.get("value")
        form = (stored.get("system") if system else None, value)
        if form not in forms and isinstance(value, str):
            forms.append((form[0], value))
    return forms


def _path_system(param: SearchParameter) -> str | None:
    """'phone' for a parameter on telecom[system=phone]."""
    systems = {path[-1].where_value for path in param.paths if path and path[-1].where_key == "system"}
    return systems.pop() if len(systems) == 1 else None


def _ends_at(param: SearchParameter, element: str) -> bool:
    return any(path and path[-1].name == element for path in param.paths)


def _dedupe(items: list) -> list:
    return list(dict.fromkeys(items))
