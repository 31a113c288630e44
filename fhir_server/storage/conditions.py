"""Conditions on stored resources, in the storage layer's own words: what the rest of the server
combines (a search plan narrowed to an owner, "this or that", rows after a page's last one) without
writing MongoDB query syntax itself. A condition is an opaque value to callers; only storage reads it."""
from __future__ import annotations

from typing import Iterable

Condition = dict

NOTHING: Condition = {"_id": {"$in": []}}  # matches no resource
NOBODY = "-"  # an owner no resource has


def all_of(*conditions: Condition) -> Condition:
    present = [c for c in conditions if c]
    if not present:
        return {}
    return present[0] if len(present) == 1 else {"$and": present}


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


def narrowed(condition: Condition, extra: Condition | None) -> Condition:
    """`condition` and `extra` (e.g. an owner restriction), as one condition."""
    if not extra:
        return condition
    if not condition:
        return extra
    if not set(condition) & set(extra):
        return {**condition, **extra}
    return {"$and": [condition, extra]}


def referring(parameter: str, references: list[str]) -> Condition:
    """Current resources whose reference search parameter is one of `references`."""
    return {f"s.{parameter}": {"$in": references}, "del": False}
