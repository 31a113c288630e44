"""Keyset paging: a page link carries the sort keys of the entry it continues from, not an offset,
so pages stay consistent while resources are written, and MongoDB never skips over rows."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from ..outcome import FhirError


def encode_cursor(state: dict) -> str:
    def default(value):
        if isinstance(value, datetime):
            return {"$d": value.isoformat()}
        raise TypeError

    data = orjson.dumps(state, default=default, option=orjson.OPT_PASSTHROUGH_DATETIME)
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(token: str, fits: Callable[[Any], bool]) -> dict:
    """The state `encode_cursor` made, if it `fits` the shape its reader expects. It comes back
    from the client, so anything else is refused: a sort key is a scalar, never an object the
    database would read as an operator ({"$gt": ""})."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = _revive(orjson.loads(raw))
    except (ValueError, TypeError, orjson.JSONDecodeError):
        state = None
    if not (isinstance(state, dict) and fits(state)):
        raise FhirError.of(
            400,
            "invalid",
            "The paging cursor is not valid; start the search again",
            "Le curseur de pagination n'est pas valide ; relancez la recherche",
            "_cursor",
        ) from None
    return state


def sort_keys(values: Any, count: int) -> bool:
    """Whether `values` can be the `count` sort keys of a row."""
    return isinstance(values, list) and len(values) == count and all(isinstance(v, _SCALARS) for v in values)


_SCALARS = (str, int, float, bool, datetime, type(None))


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$d"}:
            return datetime.fromisoformat(value["$d"])
        return {k: _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def sort_values(doc: dict, sort: list[tuple[str, int]]) -> list:
    """The values of the sort keys (dotted paths such as o.date.hi) in one document; None if absent."""
    values = []
    for field, _ in sort:
        value: Any = doc
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values.append(value)
    return values


def reverse(sort: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(field, -direction) for field, direction in sort]
