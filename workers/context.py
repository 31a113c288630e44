"""What a job needs, built once per worker process from the environment (the same settings as
the web processes): the settings, the FHIR store and the operational records' connection.

The store has no access control: jobs are the platform itself acting on what was committed (the
request that caused an event was authorised when it was written). Resources a job writes are
given the owners of the resource they are about (`UnitOfWork.grant`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from fhir_server.resources import SUPPORTED_TYPES
from fhir_server.settings import Settings
from fhir_server.storage import Store, records

_contexts: dict[tuple, "WorkerContext"] = {}


@dataclass
class WorkerContext:
    settings: Settings

    @cached_property
    def store(self) -> Store:
        config = self.settings
        return Store(config.mongodb_uri, config.mongodb_db, SUPPORTED_TYPES, config.base_url, create_indexes=False)

    @cached_property
    def audit(self):
        """The audit log, written at once (a job's process may end right after)."""
        from fhir_server.storage.audit import AuditLog

        return AuditLog(self.store, interval=0)

    @cached_property
    def pseudonym_keyring(self):
        """Public health's pseudonym keys, read once per process."""
        from fhir_server.pseudonyms import load_keyring

        return load_keyring(self.settings)

    @cached_property
    def subscription_events(self):
        """The Subscriptions' records, their indexes made once per process."""
        from fhir_server.storage.subscription_events import SubscriptionEvents

        events = SubscriptionEvents(self.store.db)
        events.ensure_indexes()
        return events

    @cached_property
    def pseudonymised_records(self):
        """Public health's records, their indexes made and their counts complete once per
        process (the feed job is their one writer)."""
        from fhir_server.storage.pseudonymised import PseudonymisedRecords

        records = PseudonymisedRecords(self.store.db)
        records.ensure_indexes()
        records.count_earlier_records()
        return records

    def connect_records(self, *models) -> None:
        records.connect(self.settings.mongodb_uri, self.settings.mongodb_db, *models)


def context(settings: Settings | None = None) -> WorkerContext:
    """This process's context: `settings`, else those of the environment (one per database)."""
    settings = settings or Settings.from_env()
    if not settings.mongodb_uri:
        raise RuntimeError("MONGODB_URI is not set: a job needs the platform's database")
    key = (settings.mongodb_uri, settings.mongodb_db, os.getpid())
    if key not in _contexts:
        _contexts[key] = WorkerContext(settings)
    ctx = _contexts[key]
    ctx.connect_records()
    return ctx
