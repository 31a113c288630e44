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
ROLE_DMP_CONNECTOR = "dmp-connector"  # the shared medical record (DMP) feed: every organisation's results, read
ROLE_PRESCRIBER = "prescriber"  # a prescriber's software: the results of the tests its organisation requests
UNRESTRICTED_ROLES = frozenset({ROLE_OPERATOR, ROLE_PUBLIC_HEALTH, ROLE_DMP_CONNECTOR})
ROLES = (ROLE_LABORATORY, ROLE_PRESCRIBER, ROLE_OPERATOR, ROLE_PUBLIC_HEALTH, ROLE_DMP_CONNECTOR)

# Access keys, the values of a stored resource's owner list (`org`):
# - "<FINESS juridique>": owned by an organisation (read and write);
# - "rpps:<RPPS>": owned by a health professional acting without an organisation (read and write);
# - "requester:rpps:<RPPS>": readable by the professional who requested the test (read only);
# - "client:<client_id>" (or "user:<login>"): owned by a principal bound to neither (a public
#   health or DMP client: what only its owner sees, its Subscriptions, needs an owner too).
OWNER_RPPS = "rpps:"
REQUESTER_RPPS = "requester:rpps:"


def rpps_owner(rpps: str) -> str:
    return OWNER_RPPS + rpps


def requester_key(rpps: str) -> str:
    return REQUESTER_RPPS + rpps


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

    @property
    def owner_key(self) -> str | None:
        """What the principal's writes are stamped with and what it owns: its organisation, else,
        for a professional known by their RPPS alone, "rpps:<RPPS>", else the principal itself."""
        if self.organisation:
            return self.organisation
        return rpps_owner(self.rpps) if self.rpps else f"{self.kind}:{self.id}"

    @property
    def read_keys(self) -> frozenset[str]:
        """The owner-list values that make a resource readable: what it owns, and the results of
        tests a professional requested (read only)."""
        keys = {self.owner_key} if self.owner_key else set()
        if self.rpps:
            keys.add(requester_key(self.rpps))
        return frozenset(keys)

    def belongs(self, owner: list[str] | None) -> bool:
        """Does a resource owned by `owner` belong to this principal (its organisation, or the
        professional themselves)? Writing needs this."""
        return self.unrestricted or bool(self.owner_key and owner and self.owner_key in owner)

    def may_read(self, owner: list[str] | None) -> bool:
        """May the principal read a resource owned by `owner`? Its own, and the results of tests
        it requested."""
        return self.unrestricted or bool(owner and self.read_keys.intersection(owner))

    def may_read_own(self, owner: list[str] | None) -> bool:
        """`may_read` without the roles that see every organisation's data: for what belongs to
        whoever wrote it alone (a Subscription)."""
        return bool(owner and self.read_keys.intersection(owner))

    def to_doc(self) -> dict:
        return {
            "kind": self.kind,
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "scope": self.scopes.text,
            "org": self.organisation,
            "org_name": self.organisation_name,
            "sites": sorted(self.sites),
            "rpps": self.rpps,
        }

    @classmethod
    def from_doc(cls, doc: dict) -> "Principal":
        return cls(
            doc["kind"],
            doc["id"],
            doc.get("name") or doc["id"],
            doc["role"],
            parse(doc.get("scope") or ""),
            doc.get("org"),
            doc.get("org_name"),
            frozenset(doc.get("sites") or ()),
            doc.get("rpps"),
        )

    @classmethod
    def for_client(cls, client: dict, scope: str) -> "Principal":
        return cls(
            "client",
            client["_id"],
            client.get("name") or client["_id"],
            client.get("role") or ROLE_LABORATORY,
            parse(scope),
            client.get("org"),
            client.get("org_name"),
            frozenset(client.get("sites") or ()),
        )


def current_principal() -> Principal | None:
    """The principal of the current request, if any (None outside requests and when auth is off)."""
    if not has_request_context():
        return None
    return g.get("principal")
