"""Accessors for what the application factory set up, so handlers don't pass it around."""

from __future__ import annotations

from flask import current_app, g

from .search.query import MAX_CHAIN_IDS, PlanBuilder
from .settings import Settings
from .storage import Store, UnitOfWork


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def store() -> Store:
    return current_app.extensions["sidep.store"]


def plan_builder(strict: bool = False, uow: UnitOfWork | None = None) -> PlanBuilder:
    """A search plan builder; inside a transaction, chained lookups read through its session."""
    config = settings()

    def lookup(rtype, plan, projection):
        fields = {projection: 1} if projection != "_id" else {"_id": 1}
        if uow is not None:
            return uow.find(rtype, plan.filter, MAX_CHAIN_IDS + 1, fields)
        return store().find(rtype, plan.filter, limit=MAX_CHAIN_IDS + 1, projection=fields)

    builder = PlanBuilder(
        config.base_url, config.default_page_size, config.max_page_size, lookup, strict, config.max_search_value_length
    )
    restrict = current_app.extensions.get("sidep.restrict_plans")  # access control (fhir_server.auth)
    return restrict(builder, uow is not None) if restrict else builder


def principal_owner() -> str | None:
    """What the authenticated client or user owns resources as: its FINESS juridique, or
    "rpps:<RPPS>" for a professional without organisation (auth/principal.py)."""
    principal = g.get("principal") if g else None
    return getattr(principal, "owner_key", None) if principal else None
