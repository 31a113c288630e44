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
    """Every condition, as one flat document where their fields differ: a flat filter (no
    top-level $and) is what index selection looks at, in MongoDB and even more so in SecantusDB,
    which plans nothing for a top-level operator. Empty or None conditions are left out."""
    merged: Condition = {}
    rest: list[Condition] = []
    for condition in conditions:
        if not condition:
            continue
        if any(key in merged for key in condition):
            rest.append(condition)
        else:
            merged.update(condition)
    if rest:
        merged["$and"] = rest
    return merged


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
    after on key i."""
    alternatives = []
    for i, (field_name, direction) in enumerate(sort):
        after = _after(field_name, direction, values[i])
        if after is None:
            continue
        equal = [{f: v} for (f, _), v in zip(sort[:i], values[:i], strict=True)]
        alternatives.append({"$and": equal + [after]} if equal else after)
    return {"$or": alternatives} if alternatives else NOTHING


def _after(field_name: str, direction: int, value) -> Condition | None:
    """Documents strictly after `value` on one key, in MongoDB's order (null sorts lowest)."""
    if direction == 1:
        return {field_name: {"$ne": None}} if value is None else {field_name: {"$gt": value}}
    if value is None:
        return None
    return {"$or": [{field_name: {"$lt": value}}, {field_name: None}]}


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
