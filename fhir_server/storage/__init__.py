"""The storage layer: the only code that talks to MongoDB."""

from .store import Conflict, Record, Store, UnitOfWork, new_id  # noqa: F401
