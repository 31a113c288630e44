"""What else happens, in the same transaction, when a resource is written or deleted.

Capabilities register functions here (e.g. the submission contract's outbox events) instead of
growing each interaction: `on_write(fn)` with fn(uow, record, previous)."""
from __future__ import annotations

from typing import Callable

from ..storage import Record, UnitOfWork

_on_write: list[Callable[[UnitOfWork, Record, Record | None], None]] = []
_on_delete: list[Callable[[UnitOfWork, Record], None]] = []


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
