"""Authorisation: who may do what, decided here and applied in one place on every path.

Where each rule is applied:
- `authorize_request` (a pipeline interceptor, before every FHIR interaction): a valid bearer token
  (401 otherwise), the scope the interaction needs on its resource type (403), and for instance
  history and instance $operations, that the instance belongs to the principal's organisation.
- `OrganisationAccess` (installed as `Store.access`): every read the request makes through the
  store — read, vread, searches and their chained/_has lookups, _include/_revinclude, counts,
  history, reads inside batch/transaction and $operations — is checked against the scopes and,
  for patient data, narrowed to the resources the principal may read (`org` field: see below).
  Writes are stamped with the writer's owner key (`org`, kept with the history entry).
- `check_write` / `check_delete` (write hooks, inside the unit of work, so every write path:
  create, update, patch, delete, conditional ones, transaction and batch entries, operations):
  the create/update/delete scope, that an existing resource belongs to the organisation, that
  Organizations written carry only its own FINESS numbers.
- `check_final_state` (once per unit of work, after its last write, before anything is sent), on
  the state the whole unit produces — a transaction Bundle is judged as a whole, whatever order
  its entries are processed in: that results name one of the organisation's sites as performer,
  and that references to patient data point at the organisation's own resources. Then
  `grant_requesters`: the results of a test whose ServiceRequest names a requester by RPPS become
  readable by that professional.
- `restrict_plans` (conditional matching): a client's If-None-Exist, conditional update/delete and
  conditional references only match its organisation's resources.

Patient data the principal may not read answers exactly as what does not exist, on every
interaction and operation: 404 by id (and no create-on-update with a client-chosen id, which
would otherwise tell a taken id from a free one), no match for conditions and conditional
references, a delete that deletes nothing. Only the audit log records that access was refused.

Each organisation's Patient belongs to it alone: another laboratory sending the same INS gets its
own Patient (the person record links them: fhir_server/identity.py). Results belong to the
organisation that wrote them. Organization, Practitioner and terminology resources are readable
by every client, and written only by the organisation they describe or that wrote them.

Owners are not only organisations (principal.py): a nurse or doctor known by their RPPS alone
enters results as "rpps:<RPPS>", which then plays the organisation's part everywhere above (their
results name themselves, a Practitioner with their RPPS, as performer: no organisation). The
professional a ServiceRequest names as requester (requester.identifier with an RPPS, or a
Practitioner carrying one) is added as "requester:rpps:<RPPS>" to the owners of that request, of
the Specimens, Observations and DiagnosticReports based on it and of its Patient: enough to read
them (the same `org` filter), never to write them (writing needs an owner key). Such grants are
only ever added: a resend naming another requester does not take the first one's access away.
"""

from __future__ import annotations

from flask import current_app, g, has_request_context, request

from profiles.validators import FINESS, FINESS_OLD, IDNAT_PS, RPPS

from ..interactions.write_hooks import WriteHooks
from ..outcome import FhirError, missing_reference, not_known
from ..resources import READ_ONLY_TYPES
from ..search.extract import reference_key
from ..storage import Record, UnitOfWork
from ..storage.accounts import utc_now
from ..storage.conditions import Condition, all_of, any_of, owned_by
from .principal import ROLE_OPERATOR, ROLE_PUBLIC_HEALTH, Principal, current_principal, requester_key

# Who reads the pseudonymised data of every organisation's results.
PUBLIC_HEALTH_READERS = frozenset({ROLE_PUBLIC_HEALTH, ROLE_OPERATOR})

# Patient data: readable only by the organisations it belongs to.
BOUND_TYPES = frozenset(
    {
        "Patient",
        "ServiceRequest",
        "Specimen",
        "Observation",
        "DiagnosticReport",
        "Communication",
        "Binary",
        "AuditEvent",
    }
)
# What belongs to the client that wrote it whatever its role: only operators see everyone's
# (a public health or DMP client sees every organisation's patient data, not another's Subscription
# and the secrets its channel headers carry).
PRIVATE_TYPES = frozenset({"Subscription"})
OWNED_TYPES = BOUND_TYPES | PRIVATE_TYPES
PERFORMED_TYPES = frozenset({"Observation", "DiagnosticReport", "ServiceRequest"})
# where a resource names the ServiceRequest it carries out (its requester may read it)
REQUEST_ELEMENTS = {
    "ServiceRequest": (),
    "Specimen": ("request",),
    "Observation": ("basedOn",),
    "DiagnosticReport": ("basedOn",),
}
FINESS_SYSTEMS = frozenset({FINESS, FINESS_OLD})

# the scope letters (cruds) an interaction needs on its resource type; any one of them will do
NEEDS = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "operation-instance": "r",
    "search-type": "s",
    "search-post": "s",
    "history-type": "s",
    "operation-type": "cruds",
    "create": "c",
    "update": "cu",
    "conditional-update": "cu",
    "delete": "d",
    "conditional-delete": "d",
    "patch": "u",
    "conditional-patch": "u",
}
WRITES = frozenset(
    {"create", "update", "conditional-update", "delete", "conditional-delete", "patch", "conditional-patch"}
)
INSTANCE_CHECKED = frozenset({"history-instance", "operation-instance"})
VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


# -- errors ------------------------------------------------------------------------------------
def unauthorized(error: str | None, en: str, fr: str) -> FhirError:
    challenge = 'Bearer realm="sidep"' + (f', error="{error}", error_description="{en}"' if error else "")
    failure = FhirError.of(401, "login", en, fr)
    failure.headers["WWW-Authenticate"] = challenge
    return failure


def forbidden(en: str, fr: str, record: Record | None = None) -> FhirError:
    error = FhirError.of(403, "forbidden", en, fr)
    if record is not None:
        note_refused(record)
        error.about = (record.type, record.id)
    return error


def require_public_health(
    principal: Principal | None, en: str, fr: str, rtype: str | None = None, perm: str = "r"
) -> None:
    """What public health reads of everyone's results (the pseudonymised feed, the aggregates,
    the export of records) is for the public-health role and operators alone (403 `en`/`fr`
    otherwise), and, with `rtype`, for a token whose scopes allow `perm` on it. Without
    authentication (development) everything is allowed."""
    if principal is None:
        return
    if principal.role not in PUBLIC_HEALTH_READERS:
        raise forbidden(en, fr)
    if rtype and not principal.scopes.allows(rtype, perm):
        raise scope_refused(rtype, perm)


def scope_refused(rtype: str | None, perms: str) -> FhirError:
    what = " or ".join(VERBS[p] for p in perms)
    target = rtype or "every type"
    return forbidden(
        f"The token's scopes do not allow to {what} {target}",
        f"Les scopes du jeton ne permettent pas de {what} {target}",
    )


def not_yours(record: Record) -> FhirError:
    """For what every client may read (Organization, Practitioner): saying it is not theirs tells nothing."""
    return forbidden(
        f"{record.type}/{record.id} does not belong to your organisation",
        f"{record.type}/{record.id} n'appartient pas à votre organisation",
        record,
    )


def hidden(rtype: str, rid: str, record: Record | None = None) -> FhirError:
    """Patient data the principal may not see: the very answer a missing resource gets (the audit
    log alone records the refusal)."""
    if record is not None:
        note_refused(record)
    error = not_known(rtype, rid)
    error.about = (rtype, rid)
    return error


def note_refused(record: Record) -> None:
    if has_request_context():
        g.setdefault("refused", []).append(record)  # the audit names what was refused


def read_only(rtype: str) -> FhirError:
    return FhirError.of(
        405,
        "not-supported",
        f"{rtype} is read-only: the server writes it",
        f"{rtype} est en lecture seule : le serveur l'écrit",
    )


def sees_all(principal: Principal, rtype: str | None) -> bool:
    """Does the principal see every owner's resources of this type (None: of every type)?"""
    return principal.unrestricted and (
        principal.role == ROLE_OPERATOR or (rtype is not None and rtype not in PRIVATE_TYPES)
    )


def owner_checked(principal: Principal, rtype: str) -> bool:
    """Is a resource of this type shown to the principal only when it may read its owner's?"""
    return rtype in OWNED_TYPES and not sees_all(principal, rtype)


# -- authentication ----------------------------------------------------------------------------
def authenticate() -> Principal:
    """The request's principal from its bearer token: one read by the token's hash, once per request."""
    principal = g.get("principal")
    if principal is not None:
        return principal
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized(
            None,
            "A bearer access token is required (POST /oauth/token)",
            "Un jeton d'accès (bearer) est requis (POST /oauth/token)",
        )
    doc = current_app.extensions["sidep.accounts"].token(token)
    if doc is None:
        raise unauthorized(
            "invalid_token", "The access token is unknown or revoked", "Le jeton d'accès est inconnu ou révoqué"
        )
    if doc["exp"] <= utc_now():
        raise unauthorized("invalid_token", "The access token has expired", "Le jeton d'accès a expiré")
    principal = Principal.from_doc(doc["principal"])
    g.principal = principal
    return principal


# -- the request interceptor -------------------------------------------------------------------
def interaction() -> str:
    return (request.endpoint or "").rpartition(".")[2]


def authorize_request() -> None:
    endpoint = interaction()
    view = request.view_args or {}
    rtype = view.get("rtype")
    secured = "sidep.accounts" in current_app.extensions and current_app.config["SETTINGS"].auth_enabled
    principal = authenticate() if secured and endpoint != "capabilities" else None
    if endpoint in WRITES and rtype in READ_ONLY_TYPES:
        raise read_only(rtype)
    if principal is None:
        return
    if endpoint == "history-system" and not principal.scopes.allows("*", "s"):
        raise scope_refused(None, "s")
    if endpoint == "operation-system" and not principal.unrestricted and _changes_state(view.get("name")):
        raise forbidden(
            f"${view.get('name')} is for platform operators", f"${view.get('name')} est réservée aux opérateurs"
        )
    needs = NEEDS.get(endpoint)
    if needs and rtype and not principal.scopes.allows_any(rtype, needs):
        raise scope_refused(rtype, needs)
    if endpoint in INSTANCE_CHECKED and rtype and owner_checked(principal, rtype):
        record = current_app.extensions["sidep.store"].current(rtype, view.get("rid", ""))
        if record is not None and not principal.may_read(record.owner):
            raise hidden(rtype, record.id, record)


# -- reads through the store -------------------------------------------------------------------
def read_filter(principal: Principal, rtype: str | None, perm: str = "s") -> Condition | None:
    """What `principal` may read of `rtype` (None: of every type) with `perm` (r by id, s by
    search), as a condition on stored resources (None: all of them); 403 beyond its scopes. The
    request's view of the store, and what a Subscription's owner is notified of (the delivery
    workers, outside any request)."""
    if not principal.scopes.allows(rtype, perm):
        raise scope_refused(rtype, perm)
    if rtype is not None:
        return owned_by(principal.read_keys) if owner_checked(principal, rtype) else None
    if principal.role == ROLE_OPERATOR:
        return None
    if principal.unrestricted:  # system history: every type, but others' private ones
        return any_of({"t": {"$nin": sorted(PRIVATE_TYPES)}}, owned_by(principal.read_keys))
    return owned_by(principal.read_keys)


class OrganisationAccess:
    """`Store.access`: the request principal's view of the database."""

    def owner(self) -> str | None:
        principal = current_principal()
        return principal.owner_key if principal else None

    def where(self, rtype: str | None, perm: str) -> dict | None:
        principal = current_principal()
        return None if principal is None else read_filter(principal, rtype, perm)

    def check(self, record: Record) -> None:
        principal = current_principal()
        if principal is None:
            return
        if not principal.scopes.allows(record.type, "r"):
            raise scope_refused(record.type, "r")
        if owner_checked(principal, record.type) and not principal.may_read_own(record.owner):
            raise hidden(record.type, record.id, record)

    def visible(self, record: Record) -> bool:
        """Is this record there for the principal (to refer to, to delete)? Patient data it may
        not read is not; whether it may write what it reads is the write rules' to say."""
        principal = current_principal()
        if principal is None or not owner_checked(principal, record.type):
            return True
        if principal.may_read_own(record.owner):
            return True
        note_refused(record)
        return False


def restrict_plans(builder, matching: bool):
    """Conditional criteria of a client match only its organisation's resources. Chained and _has
    lookups are built by the same builder, so narrowed too."""
    principal = current_principal()
    if not matching or principal is None or principal.role == ROLE_OPERATOR:
        return builder
    build = builder.build
    own = owned_by([principal.owner_key] if principal.owner_key else [])

    def restricted(rtype, pairs):
        plan = build(rtype, pairs)
        if owner_checked(principal, rtype):
            plan.filter = all_of(plan.filter, own)
        return plan

    builder.build = restricted
    return builder


# -- writes, inside the unit of work -----------------------------------------------------------
def _changes_state(name: str | None) -> bool:
    from operations import find

    op = find(name or "", "system", None)
    return bool(op and op.affects_state)


def _api_request() -> bool:
    return has_request_context() and request.blueprint == "fhir"


def register(hooks: WriteHooks) -> None:
    """Authorisation's write rules, registered first: nothing else runs for a refused write."""
    hooks.on_write.append(check_write)
    hooks.on_delete.append(check_delete)
    hooks.before_commit.extend([check_final_state, grant_requesters])


def check_write(uow: UnitOfWork, record: Record, previous: Record | None) -> None:
    if record.type in READ_ONLY_TYPES and _api_request():
        raise read_only(record.type)
    principal = current_principal()
    if principal is None:
        return
    perm = "c" if previous is None or previous.deleted else "u"
    if not principal.scopes.allows(record.type, perm):
        raise forbidden(*_scope_text(record.type, perm), record)
    if record.type in PRIVATE_TYPES and owner_checked(principal, record.type):
        _check_private(uow, principal, record, previous)
        return
    if principal.unrestricted:
        return
    if record.type == "Organization":
        _check_organization(principal, record, previous)
    elif previous is not None and not principal.belongs(previous.owner):
        visible = record.type not in BOUND_TYPES or principal.may_read(previous.owner)
        raise not_yours(previous) if visible else hidden(record.type, record.id, previous)
    elif previous is None and record.type in OWNED_TYPES and not uow.assigned(record.type, record.id):
        raise hidden(record.type, record.id)  # a free id and a taken one answer alike


def _check_private(uow: UnitOfWork, principal: Principal, record: Record, previous: Record | None) -> None:
    """Another's private resource (a Subscription) is not there for the writer, whatever its role;
    nor is a free id to create one with (a free id and a taken one answer alike)."""
    if previous is not None and not previous.deleted and not principal.may_read_own(previous.owner):
        raise hidden(record.type, record.id, previous)
    if (previous is None or previous.deleted) and not uow.assigned(record.type, record.id):
        raise hidden(record.type, record.id)


def check_final_state(uow: UnitOfWork) -> None:
    """The rules judged on what the whole unit of work wrote, once it has written everything."""
    principal = current_principal()
    if principal is None or principal.unrestricted:
        return
    for record in uow.written():
        if record.deleted:
            continue
        if record.type in PERFORMED_TYPES:
            _check_performers(uow, principal, record)
        _check_references(uow, principal, record)


def check_delete(uow: UnitOfWork, record: Record) -> None:
    if record.type in READ_ONLY_TYPES and _api_request():
        raise read_only(record.type)
    principal = current_principal()
    if principal is None:
        return
    if not principal.scopes.allows(record.type, "d"):
        raise forbidden(*_scope_text(record.type, "d"), record)
    if owner_checked(principal, record.type) and not principal.may_read_own(record.owner):
        raise hidden(record.type, record.id, record)
    if not principal.belongs(record.owner):
        raise not_yours(record)  # patient data gets here only when the principal may read it (visible)


def _scope_text(rtype: str, perm: str) -> tuple[str, str]:
    return (
        f"The token's scopes do not allow to {VERBS[perm]} {rtype}",
        f"Les scopes du jeton ne permettent pas de {VERBS[perm]} {rtype}",
    )


def finess_numbers(resource: dict | None) -> set[str]:
    return {
        i.get("value")
        for i in (resource or {}).get("identifier", [])
        if isinstance(i, dict) and i.get("system") in FINESS_SYSTEMS and i.get("value")
    }


def _check_organization(principal: Principal, record: Record, previous: Record | None) -> None:
    """An Organization is written only by the organisation it describes (FINESS juridique or site)."""
    numbers = finess_numbers(record.resource) | finess_numbers(previous.resource if previous else None)
    if numbers:
        if not numbers <= principal.finess:
            others = ", ".join(sorted(numbers - principal.finess))
            raise forbidden(
                f"Organization/{record.id}: FINESS {others} is not your organisation or one of its sites",
                f"Organization/{record.id} : le FINESS {others} n'est ni votre organisation ni l'un de ses sites",
                record,
            )
    elif previous is not None and not principal.belongs(previous.owner):
        raise not_yours(previous)


def _performer_finess(uow: UnitOfWork, performer: dict) -> set[str] | None:
    """The FINESS numbers of a performer that is an organisation; None for a person."""
    identifier = performer.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") in FINESS_SYSTEMS:
        return {identifier.get("value")}
    key = reference_key(performer.get("reference") or "", uow.store.base_url)
    rtype, _, rid = key.partition("/")
    if rtype == "Organization" and rid:
        target = uow.current("Organization", rid)
        return finess_numbers(target.resource if target else None)
    return None


def rpps_numbers(resource: dict | None) -> set[str]:
    """The RPPS numbers among a person's identifiers (RPPS, or idNat_PS "8" + RPPS)."""
    numbers = set()
    for i in (resource or {}).get("identifier") or []:
        if not isinstance(i, dict) or not isinstance(i.get("value"), str):
            continue
        if i.get("system") == RPPS:
            numbers.add(i["value"])
        elif i.get("system") == IDNAT_PS and i["value"].startswith("8"):
            numbers.add(i["value"][1:])
    return numbers


def person_rpps(uow: UnitOfWork, actor: dict) -> set[str]:
    """The RPPS numbers of a reference to a person: its identifier, or the Practitioner it points at."""
    identifier = actor.get("identifier")
    numbers = rpps_numbers({"identifier": [identifier]}) if isinstance(identifier, dict) else set()
    rtype, _, rid = reference_key(actor.get("reference") or "", uow.store.base_url).partition("/")
    if rtype == "Practitioner" and rid and "/" not in rid:
        target = uow.current("Practitioner", rid)
        numbers |= rpps_numbers(target.resource if target and not target.deleted else None)
    return numbers


def _check_performers(uow: UnitOfWork, principal: Principal, record: Record) -> None:
    """A result names one of the organisation's sites as performer, and no other organisation; a
    professional without organisation names themselves (a Practitioner with their RPPS), and no
    organisation nor other professional."""
    performers = [p for p in record.resource.get("performer") or [] if isinstance(p, dict)]
    organisations = [n for p in performers for n in [_performer_finess(uow, p)] if n is not None]
    if principal.organisation is None:
        people = [person_rpps(uow, p) for p in performers if _performer_finess(uow, p) is None]
        if organisations or not people or not all(numbers == {principal.rpps} for numbers in people):
            raise forbidden(
                f"{record.type}.performer must be you (a Practitioner with your RPPS number "
                f"{principal.rpps}), and no organisation",
                f"{record.type}.performer doit être vous-même (un Practitioner portant votre numéro "
                f"RPPS {principal.rpps}), et aucune organisation",
                record,
            )
        return
    if not organisations or not all(numbers & principal.sites for numbers in organisations):
        raise forbidden(
            f"{record.type}.performer must be one of your sites (FINESS géographique)",
            f"{record.type}.performer doit être l'un de vos sites (FINESS géographique)",
            record,
        )


# -- read access for requesters, once per unit of work ----------------------------------------------
def grant_requesters(uow: UnitOfWork) -> None:
    """The professional a ServiceRequest names as requester (by RPPS) may read it, the Specimens,
    Observations and DiagnosticReports based on it, what a report lists as results and specimens,
    and its Patient. Looked at: what this unit wrote or read (a resent dossier whose request now
    names a requester reaches its unchanged results too); a grant already there writes nothing."""
    base = uow.store.base_url
    writer = current_principal()
    own = requester_key(writer.rpps) if writer and writer.rpps else None  # who enters needs no grant
    for rtype, elements in REQUEST_ELEMENTS.items():
        for record in uow.known(rtype):
            if record.deleted or not record.resource:
                continue
            requests = (
                [record]
                if rtype == "ServiceRequest"
                else [
                    target
                    for key in _targets(record.resource, elements, "ServiceRequest", base)
                    for target in [uow.current("ServiceRequest", key)]
                    if target and not target.deleted
                ]
            )
            keys = sorted(
                {
                    requester_key(n)
                    for request in requests
                    for n in person_rpps(uow, request.resource.get("requester") or {})
                }
                - {own}
            )
            if not keys:
                continue
            uow.grant(rtype, record.id, keys)
            for patient in _targets(record.resource, ("subject",), "Patient", base):
                uow.grant("Patient", patient, keys)
            if rtype == "DiagnosticReport":
                for target_type, element in (("Observation", "result"), ("Specimen", "specimen")):
                    for rid in _targets(record.resource, (element,), target_type, base):
                        uow.grant(target_type, rid, keys)


def requested(principal: Principal) -> Condition | None:
    """The storage condition for the resources of tests this professional requested (None: none)."""
    return owned_by([requester_key(principal.rpps)]) if principal.rpps else None


def _targets(resource: dict, elements, rtype: str, base: str) -> list[str]:
    """Ids of the `rtype` resources that `elements` (a Reference or a list of them) point at."""
    ids = []
    for element in elements:
        value = resource.get(element)
        for ref in value if isinstance(value, list) else [value]:
            if isinstance(ref, dict):
                target_type, _, rid = reference_key(ref.get("reference") or "", base).partition("/")
                if target_type == rtype and rid and "/" not in rid:
                    ids.append(rid)
    return ids


def _check_references(uow: UnitOfWork, principal: Principal, record: Record) -> None:
    """References to patient data point at existing resources of the principal's organisation;
    another's is answered as a missing one."""
    base = uow.store.base_url
    for value in _references(record.resource):
        key = reference_key(value, base)
        rtype, _, rid = key.partition("/")
        if rtype not in BOUND_TYPES or not rid or "/" in rid or (rtype, rid) == (record.type, record.id):
            continue
        if not uow.referable(rtype, rid):  # missing, deleted or another's: answered alike
            error = FhirError.of(404, "not-found", *missing_reference(key))
            error.about = (record.type, record.id)
            error.reference = value
            raise error
        if not principal.belongs(uow.current(rtype, rid).owner):  # readable (a test it requested), not its own
            raise forbidden(
                f"{record.type}/{record.id} refers to {key}, which does not belong to your organisation",
                f"{record.type}/{record.id} fait référence à {key}, qui n'appartient pas à votre organisation",
                record,
            )


def _references(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            elif isinstance(value, (dict, list)):
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)
