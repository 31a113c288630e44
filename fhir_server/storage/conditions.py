"""Conditions on stored resources, in the storage layer's own words: what the rest of the server
combines (a search plan narrowed to an owner, "this or that", rows after a page's last one) without
writing MongoDB query syntax itself. A condition is an opaque value to callers; only storage reads it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta

from ..search.dates import utc_now

Condition = dict

NOTHING: Condition = {"_id": {"$in": []}}  # matches no resource
NOBODY = "-"  # an owner no resource has


def all_of(*conditions: Condition | None) -> Condition:
    """Every condition, as one flat document: a flat filter (no top-level $and) is what index
    selection looks at, in MongoDB and even more so in SecantusDB, which plans nothing for a
    top-level operator. Conditions on the same field are merged (`both`); only those that cannot
    be go under `$and`. Empty or None conditions are left out."""
    merged: Condition = {}
    rest: list[Condition] = []
    for condition in conditions:
        if not condition:
            continue
        joined = both(merged, condition)
        if joined is None:
            rest.append(condition)
        else:
            merged = joined
    if rest:
        merged["$and"] = rest
    return merged


def both(first: Condition, second: Condition) -> Condition | None:
    """`first` and `second` as one flat document, or None when a field's two conditions cannot be
    written as one (the same operator twice, a literal sub-document, a top-level operator)."""
    merged = dict(first)
    for key, condition in second.items():
        if key not in merged:
            merged[key] = condition
            continue
        if key.startswith("$"):
            return None
        joined = _same_field(merged[key], condition)
        if joined is _CANNOT:
            return None
        merged[key] = joined
    return merged


_CANNOT = object()


def _same_field(first, second):
    """Two conditions on one field as one. Distinct operators go in one document: MongoDB applies
    each on its own (on an array, each to any element), which is what the two conditions ANDed
    mean. An equality implied by the other condition (a value of its $in) is kept alone."""
    if first == second:
        return first
    a, b = _operators(first), _operators(second)
    if a is None or b is None:
        return _CANNOT
    for one, other, original in ((a, b, first), (b, a, second)):
        if set(one) == {"$eq"} and set(other) == {"$in"} and one["$eq"] in other["$in"]:
            return original
        if set(one) == {"$in"} and set(other) == {"$in"} and all(v in other["$in"] for v in one["$in"]):
            return original
    if set(a) & set(b):
        return _CANNOT
    return {**a, **b}


def _operators(condition) -> dict | None:
    """A field's condition as operators ({"$eq": v} for a plain value); None for what only
    matches as written (a sub-document, a compiled pattern)."""
    if isinstance(condition, dict):
        return condition if condition and all(k.startswith("$") for k in condition) else None
    if isinstance(condition, (list, re.Pattern)):
        return None
    return {"$eq": condition}


MAX_ALTERNATIVES = 16  # a query split into more flat ones than this is sent as it is


def alternatives(condition: Condition) -> list[Condition] | None:
    """Flat conditions (no top-level operator) whose union matches what `condition` matches:
    its `$or` and `$and` distributed over its fields. None when that cannot be written flat or
    takes more than MAX_ALTERNATIVES: SecantusDB plans no index for a top-level operator, so the
    storage runs one query per alternative instead (storage.union)."""
    combined: list[Condition] | None = [{}]
    for key, value in condition.items():
        if key == "$or":
            options = _union(value)
        elif key == "$and":
            options = _product(value)
        elif key.startswith("$"):
            return None
        else:
            options = [{key: value}]
        combined = _cross(combined, options)
    return combined


def _union(branches: list[Condition]) -> list[Condition] | None:
    found: list[Condition] = []
    for branch in branches:
        flat = alternatives(branch)
        if flat is None:
            return None
        found += flat
    return found


def _product(parts: list[Condition]) -> list[Condition] | None:
    combined: list[Condition] | None = [{}]
    for part in parts:
        combined = _cross(combined, alternatives(part))
    return combined


def _cross(left: list[Condition] | None, right: list[Condition] | None) -> list[Condition] | None:
    """Each of `left` ANDed with each of `right`; None when one is None, a pair cannot be written
    flat, or there are more than MAX_ALTERNATIVES."""
    if left is None or right is None or len(left) * len(right) > MAX_ALTERNATIVES:
        return None
    crossed = []
    for a in left:
        for b in right:
            joined = both(a, b)
            if joined is None:
                return None
            crossed.append(joined)
    return crossed


def any_of(*conditions: Condition) -> Condition:
    present = [c for c in conditions if c]
    if not present:
        return NOTHING
    return present[0] if len(present) == 1 else {"$or": present}


def owned_by(keys: Iterable[str]) -> Condition:
    """Resources whose owner list holds one of `keys` (none: nobody's)."""
    keys = sorted(set(keys))
    if len(keys) > 1:
        return {"org": {"$in": keys}}
    return {"org": keys[0] if keys else NOBODY}


def referring(parameter: str, references: list[str]) -> Condition:
    """Current resources whose reference search parameter is one of `references`."""
    return {f"s.{parameter}": {"$in": references}, "del": False}


def one_of(field_name: str, values: list) -> Condition:
    """A single value as plain equality (the shape every index serves), several as $in."""
    return {field_name: values[0] if len(values) == 1 else {"$in": values}}


def none_of(field_name: str, values: list) -> Condition:
    return {field_name: {"$nin": values}}


def ids_in(ids: list[str]) -> Condition:
    """Resources with one of these ids ($in even for one id: never the bare-_id fast path)."""
    return {"_id": {"$in": ids}}


def present(field_name: str, is_present: bool) -> Condition:
    return {field_name: {"$exists": is_present}}


def matching(field_name: str, anchor: str, patterns: list[str], negated: bool = False) -> Condition:
    """Values matching one of the regular expressions `patterns` after `anchor` ("^" or "").
    Never compiled patterns as a bare value or in `$in`: SecantusDB answers those from an index
    as if they were equality values (no match). One `$regex` for all the alternatives."""
    body = patterns[0] if len(patterns) == 1 else "(?:" + "|".join(patterns) + ")"
    if negated:
        return {field_name: {"$not": re.compile(anchor + body)}}
    return {field_name: {"$regex": anchor + body}}


def after_row(sort: list[tuple[str, int]], values: list) -> Condition:
    """Rows after the row whose sort keys are `values` (keyset paging): equal on the first i keys,
    after on key i. Each alternative is flat (storage runs them as separate queries)."""
    alternatives = []
    for i, (field_name, direction) in enumerate(sort):
        equal = {f: v for (f, _), v in zip(sort[:i], values[:i], strict=True)}
        alternatives += [{**equal, **after} for after in _after(field_name, direction, values[i])]
    return any_of(*alternatives) if alternatives else NOTHING


def _after(field_name: str, direction: int, value) -> list[Condition]:
    """Documents strictly after `value` on one key, in MongoDB's order (null sorts lowest), as
    alternatives."""
    if direction == 1:
        return [{field_name: {"$ne": None}} if value is None else {field_name: {"$gt": value}}]
    if value is None:
        return []
    return [{field_name: {"$lt": value}}, {field_name: None}]


def date_condition(field_name: str | None, prefix: str, lo, hi) -> dict:
    """The condition for `prefix` against the searched range [lo, hi].

    `field_name` is an array of {lo, hi} ranges; None means the scalar `ts` (meta.lastUpdated), a
    range of one instant. Prefixes that compare one end only (gt lt ge le sa eb) are a plain range
    on `<field>.lo` or `<field>.hi`, which an index serves; eq and ap need both ends of the same
    range ($elemMatch), led by a range on `<field>.lo` for the index.
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
    if len(element) == 1:  # one end: "some value's lo (or hi) ..." needs no $elemMatch
        ((end, condition),) = element.items()
        return {f"{field_name}.{end}": condition}
    lead = {"$gte": lo, "$lte": hi} if prefix == "eq" else {"$lte": hi}
    return {f"{field_name}.lo": lead, field_name: {"$elemMatch": element}}


_NEGATIVE_OPS = {"$exists", "$nin", "$not", "$ne"}


def _selects_live(clause: dict) -> bool:
    """True when the clause can only match a live resource: a positive condition on an index
    field (s.*, x.*), which deletion markers don't carry (see storage.store.UnitOfWork.delete)."""
    for key, condition in clause.items():
        if key.startswith(("s.", "x.")) and not (isinstance(condition, dict) and _NEGATIVE_OPS & set(condition)):
            return True
    return False


def combine(clauses: list[dict]) -> dict:
    """The clauses of a search plan ANDed (all_of), with `del: false` added only when no clause
    already excludes deletion markers."""
    live = [] if any(_selects_live(c) for c in clauses) else [{"del": False}]
    return all_of(*clauses, *live)
