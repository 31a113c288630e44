"""The code lists (terminology/) stored as CodeSystem and ValueSet resources, so clients can read
and search them like any resource. Stored at start, and again when an operator reloads them; a
resource whose content has not changed is not rewritten (no new version)."""

from __future__ import annotations

from terminology.service import get_service

from .interactions.update import update_resource
from .storage import Store


def _content(resource: dict | None) -> dict | None:
    return None if resource is None else {k: v for k, v in resource.items() if k not in ("meta", "id")}


def store_code_lists(store: Store) -> int:
    """Writes the code lists that differ from their stored copy; returns how many were written."""
    changed = []
    for resource in get_service().all_resources():
        current = store.current(resource["resourceType"], resource["id"])
        if current is None or current.deleted or _content(current.resource) != _content(resource):
            changed.append(resource)
    if changed:
        store.run(lambda uow: [update_resource(uow, r["resourceType"], r["id"], r) for r in changed])
    return len(changed)


def reload_code_lists(store: Store) -> dict:
    """Re-read terminology/ from disk (this process) and store what changed."""
    summary = get_service().reload()
    summary["written"] = store_code_lists(store)
    return summary
