"""Who is making a request: a software client (OAuth2 token) or, later, a user (web session).

Both carry the same `Principal`, so that authorisation and audit never ask how it authenticated:
kind (client | user), id (client_id or login), the organisation it acts for (FINESS juridique) and
that organisation's sites (FINESS géographique), its role, its SMART scopes and, for health
professionals, their RPPS number. The request's principal is `flask.g.principal`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flask import g, has_request_context

from .scopes import Scopes, parse

ROLE_LABORATORY = "laboratory"  # a laboratory information system (LIS), pharmacy software ...
ROLE_OPERATOR = "operator"  # platform operators: every organisation's data, within their scopes
ROLE_PUBLIC_HEALTH = "public-health"  # public health agencies: every organisation's data, read
UNRESTRICTED_ROLES = frozenset({ROLE_OPERATOR, ROLE_PUBLIC_HEALTH})
ROLES = (ROLE_LABORATORY, ROLE_OPERATOR, ROLE_PUBLIC_HEALTH)


@dataclass(frozen=True)
class Principal:
    kind: str  # "client" | "user"
    id: str  # client_id, or the user's login
    name: str
    role: str
    scopes: Scopes
    organisation: str | None = None  # FINESS juridique
    organisation_name: str | None = None
    sites: frozenset[str] = field(default_factory=frozenset)  # FINESS géographique
    rpps: str | None = None  # a health professional's RPPS number

    @property
    def unrestricted(self) -> bool:
        """Operators and public health see every organisation's data (their scopes still apply)."""
        return self.role in UNRESTRICTED_ROLES

    @property
    def finess(self) -> frozenset[str]:
        """Every FINESS number the principal acts for: its legal entity and its sites."""
        return self.sites | ({self.organisation} if self.organisation else set())

    def belongs(self, owner: list[str] | None) -> bool:
        """Does a resource owned by `owner` belong to this principal's organisation?"""
        return self.unrestricted or bool(self.organisation and owner and self.organisation in owner)

    def to_doc(self) -> dict:
        return {"kind": self.kind, "id": self.id, "name": self.name, "role": self.role,
                "scope": self.scopes.text, "org": self.organisation, "org_name": self.organisation_name,
                "sites": sorted(self.sites), "rpps": self.rpps}

    @classmethod
    def from_doc(cls, doc: dict) -> "Principal":
        return cls(doc["kind"], doc["id"], doc.get("name") or doc["id"], doc["role"], parse(doc.get("scope") or ""),
                   doc.get("org"), doc.get("org_name"), frozenset(doc.get("sites") or ()), doc.get("rpps"))

    @classmethod
    def for_client(cls, client: dict, scope: str) -> "Principal":
        return cls("client", client["_id"], client.get("name") or client["_id"], client.get("role") or ROLE_LABORATORY,
                   parse(scope), client.get("org"), client.get("org_name"), frozenset(client.get("sites") or ()))


def current_principal() -> Principal | None:
    """The principal of the current request, if any (None outside requests and when auth is off)."""
    if not has_request_context():
        return None
    return g.get("principal")
