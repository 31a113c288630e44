"""Conditional interactions: find what a search criteria string (`identifier=x|y`) matches."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from ..context import plan_builder, principal_owner
from ..outcome import FhirError
from ..storage import UnitOfWork


def criteria_pairs(query: str) -> list[tuple[str, str]]:
    """Search criteria as (name, value) pairs. R4 writes ifNoneExist without the type ('identifier=x'),
    as HAPI does many clients send 'Patient?identifier=x': accept both."""
    head, mark, rest = query.partition("?")
    if mark and "=" not in head:
        query = rest
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise FhirError.of(400, "invalid", f"Empty search criteria '{query}'", f"Critères de recherche vides '{query}'")
    return pairs


def claim_key(rtype: str, pairs: list[tuple[str, str]]) -> str:
    """One canonical key for the same criteria written in any order, by the same owner (criteria
    only ever match the writer's own resources: two laboratories never contend on a key)."""
    return f"{principal_owner() or '-'} {rtype}?{urlencode(sorted(pairs))}"


def matches(uow: UnitOfWork, rtype: str, pairs: list[tuple[str, str]], limit: int = 2) -> list[str]:
    """Ids of the resources matching the criteria (at most `limit`), read inside the transaction."""
    return uow.find_current(rtype, criteria_filter(uow, rtype, pairs), limit)


def criteria_filter(uow: UnitOfWork, rtype: str, pairs: list[tuple[str, str]]) -> dict:
    """The storage filter of the criteria, the writer's access conditions included."""
    return plan_builder(strict=True, uow=uow).build(rtype, pairs).filter


def several(rtype: str, query: str) -> FhirError:
    return FhirError.of(
        412,
        "multiple-matches",
        f"The criteria {rtype}?{query} match more than one resource",
        f"Les critères {rtype}?{query} correspondent à plus d'une ressource",
    )
