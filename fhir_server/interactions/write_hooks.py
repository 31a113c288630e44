"""What else happens, in the same transaction, when a resource is written or deleted.

Capabilities register functions here (e.g. the submission contract: patient matching, outbox
events) instead of growing each interaction:
- `on_write(fn)`: fn(uow, record, previous) after each create or update;
- `on_delete(fn)`: fn(uow, record) after each delete;
- `match_existing(rtype)(fn)`: fn(uow, resource) -> id of the resource a plain create should update
  instead (e.g. the same patient sent again), or None;
- `stored_fields(rtype)(fn)`: fn(resource) -> extra fields stored beside the resource.
"""
from __future__ import annotations

from typing import Callable

from ..storage import Record, UnitOfWork

_on_write: list[Callable[[UnitOfWork, Record, Record | None], None]] = []
_on_delete: list[Callable[[UnitOfWork, Record], None]] = []
_matchers: dict[str, Callable[[UnitOfWork, dict], str | None]] = {}
_field_makers: dict[str, Callable[[dict], dict]] = {}


def on_write(fn):
    _on_write.append(fn)
    return fn


def on_delete(fn):
    _on_delete.append(fn)
    return fn


def after_write(uow: UnitOfWork, record: Record, previous: Record | None) -> None:
    for fn in _on_write:
        fn(uow, record, previous)


def after_delete(uow: UnitOfWork, record: Record) -> None:
    for fn in _on_delete:
        fn(uow, record)


def match_existing(rtype: str):
    def register(fn):
        _matchers[rtype] = fn
        return fn
    return register


def stored_fields(rtype: str):
    def register(fn):
        _field_makers[rtype] = fn
        return fn
    return register


def existing_match(uow: UnitOfWork, rtype: str, resource: dict) -> str | None:
    matcher = _matchers.get(rtype)
    return matcher(uow, resource) if matcher else None


def extra_fields(rtype: str, resource: dict) -> dict | None:
    maker = _field_makers.get(rtype)
    return maker(resource) if maker else None
