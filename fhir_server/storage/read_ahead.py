"""A Store's reads by id for a batch job, fetched ahead: the job names what it will read (`load`),
which costs one query per resource type for the whole batch, and then reads them one by one
(`current`, `read`) as code written for a single resource does. What was not loaded is read
from the store as usual. Reads are as of the `load`: for jobs that work from a snapshot (the
change log's consumers), not for writes."""

from __future__ import annotations

from collections.abc import Iterable

from .store import Record, Store


class ReadAhead:
    def __init__(self, store: Store):
        self.store = store
        self._records: dict[tuple[str, str], Record | None] = {}

    def load(self, rtype: str, ids: Iterable[str]) -> None:
        wanted = sorted({rid for rid in ids if rid and (rtype, rid) not in self._records})
        if not wanted:
            return
        found = {record.id: record for record in self.store.current_many(rtype, wanted)}
        for rid in wanted:
            self._records[(rtype, rid)] = found.get(rid)

    def current(self, rtype: str, rid: str) -> Record | None:
        if (rtype, rid) not in self._records:
            self._records[(rtype, rid)] = self.store.current(rtype, rid)
        return self._records[(rtype, rid)]

    def read(self, rtype: str, rid: str) -> Record:
        return self.store.as_read(rtype, rid, self.current(rtype, rid))
