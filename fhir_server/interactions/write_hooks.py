"""What else happens, in the same transaction, when a resource is written or deleted.

Capabilities (authorisation, the submission contract, identity linking) register functions on the
application's `WriteHooks` in the application factory, in the order they run, instead of growing
each interaction:
- `on_write`: fn(uow, record, previous) after each create or update (a no-op update included:
  then record is previous);
- `on_delete`: fn(uow, record) after each delete;
- `before_commit`: fn(uow) once per unit of work, after all its writes and before they are sent,
  so a rule can judge the state a whole transaction Bundle produces;
- `preparers[rtype]`: fn(uow, rid, resource, previous) -> the resource to store, before it is
  stored by a create or update (previous: the current record or None); it may refuse it (raise);
- `matchers[rtype]`: fn(uow, resource) -> id of the resource a plain create should update instead
  (e.g. the same patient sent again), or None;
- `stored_fields[rtype]`: fn(resource) -> extra fields stored beside the resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app

from ..storage import Record, UnitOfWork

WriteHook = Callable[[UnitOfWork, Record, "Record | None"], None]
DeleteHook = Callable[[UnitOfWork, Record], None]
CommitHook = Callable[[UnitOfWork], None]


@dataclass
class WriteHooks:
    on_write: list[WriteHook] = field(default_factory=list)
    on_delete: list[DeleteHook] = field(default_factory=list)
    before_commit: list[CommitHook] = field(default_factory=list)
    preparers: dict[str, Callable[[UnitOfWork, str, dict, "Record | None"], dict]] = field(default_factory=dict)
    matchers: dict[str, Callable[[UnitOfWork, dict], str | None]] = field(default_factory=dict)
    stored_fields: dict[str, Callable[[dict], dict]] = field(default_factory=dict)

    def commit_check(self, uow: UnitOfWork) -> None:
        for fn in self.before_commit:
            fn(uow)


def hooks() -> WriteHooks:
    return current_app.extensions["sidep.write_hooks"]


def after_write(uow: UnitOfWork, record: Record, previous: Record | None) -> None:
    for fn in hooks().on_write:
        fn(uow, record, previous)


def after_delete(uow: UnitOfWork, record: Record) -> None:
    for fn in hooks().on_delete:
        fn(uow, record)


def prepared(uow: UnitOfWork, rtype: str, rid: str, resource: dict) -> dict:
    """The resource as the type's preparer would store it (itself when there is none)."""
    preparer = hooks().preparers.get(rtype)
    return preparer(uow, rid, resource, uow.current(rtype, rid)) if preparer else resource


def existing_match(uow: UnitOfWork, rtype: str, resource: dict) -> str | None:
    matcher = hooks().matchers.get(rtype)
    return matcher(uow, resource) if matcher else None


def extra_fields(rtype: str, resource: dict) -> dict | None:
    maker = hooks().stored_fields.get(rtype)
    return maker(resource) if maker else None
