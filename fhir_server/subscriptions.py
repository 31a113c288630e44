"""Subscriptions: who may subscribe to what, what a stored Subscription may say, and that the
secrets of its channel headers never leave the server.

Rules, applied on every write path (create, update, patch, transaction and batch entries: the
`preparers` write hook, before the resource is stored) and on every answer (`mask_secrets`, in
`http.fhir_response`, which every FHIR response goes through):

Who may subscribe to what (403 otherwise). The criteria's type must be one the subscriber may
search (its token's scopes) and one its role may subscribe to: results (DiagnosticReport,
Observation) for laboratories, prescribers' software, the DMP connector and public health;
any supported type for operators. What a subscription then notifies is what its owner could
read by search: the policy already narrows that (a laboratory to its own results, a prescriber
to the results of the tests it requested, the DMP connector and public health to every
organisation's results, within their scopes).

Whose it is. A Subscription belongs to the client that created it (`org`, like patient data;
fhir_server/auth/policy.py PRIVATE_TYPES): another client's Subscription is missing for it (404
on read, update, delete; absent from searches and their counts), whatever its role; only
operators see and manage every Subscription.

What it may say (422 at the element, nothing stored; 400 for what R4 itself forbids, e.g. no
`reason`):
- `status` is the server's: a client creates with `requested` (stored `requested`), and an
  update keeps the stored status (sending another one is refused at `Subscription.status`),
  except that an update changing `criteria` or `channel`, or sending `requested` (after an
  `error`, say), makes it `requested` again. Each write that leaves it `requested` commits a
  `subscription-requested` outbox event with the writer's principal: the delivery workers
  (workers/jobs/subscription_handshake.py) record the subscriber and greet the endpoint (handshake), then
  set `active`, or `error` with the `error` text. `error` is the server's too (a client's is
  dropped). Writes outside a FHIR request (the delivery workers) set both.
- `channel.type` is `rest-hook`, with an absolute `https://` `channel.endpoint` (`http://` to
  127.0.0.1, localhost or [::1] when SUBSCRIPTION_ALLOW_HTTP_LOOPBACK is on), without
  credentials in the URL; `channel.payload` absent, `application/fhir+json` or `application/json`.
- `channel.header` entries are `Name: value`, a token name and a value without control characters.
- `criteria` is `Type` or `Type?params`, a supported type and parameters the server's own search
  accepts for it (parsed by the strict PlanBuilder: chains, modifiers, prefixes as searches take
  them); result parameters (`_count`, `_sort`, `_include`...) mean nothing there.
- `end` in the past is R4's business, not refused: the server is to turn such a subscription off
  (the delivery, not this module, reads `end`). `reason` is 1..1 in R4: the structure check (400).

Secrets. Header values are stored (a delivery sends them) and never returned, to their owner
neither: every Subscription in a response body (read, vread, history, search, _include,
transaction answers, operations) shows `Name: ***`. An update that sends `Name: ***` back keeps
the stored value of that header, so a client can read, change and put back its Subscription.
The signing secret (extension SECRET_EXTENSION, a `valueString`: deliveries carry an
HMAC-SHA256 signature made with it) is write-only in the same way: shown `***`, kept when `***`
is sent back.
"""

from __future__ import annotations

import re
from ipaddress import ip_address
from urllib.parse import parse_qsl, urlsplit

from flask import has_request_context, request

from .auth.policy import forbidden, owner_checked
from .auth.principal import (
    ROLE_DMP_CONNECTOR,
    ROLE_LABORATORY,
    ROLE_OPERATOR,
    ROLE_PRESCRIBER,
    ROLE_PUBLIC_HEALTH,
    Principal,
    current_principal,
)
from .context import plan_builder, settings
from .interactions.write_hooks import WriteHooks
from .outcome import FhirError
from .resources import SUPPORTED_TYPES
from .search.query import RESULT_PARAMETERS
from .storage import Record, UnitOfWork

REQUESTED = "requested"
REST_HOOK = "rest-hook"
PAYLOADS = frozenset({"application/fhir+json", "application/json"})
RESULT_TYPES = frozenset({"DiagnosticReport", "Observation"})
SUBSCRIBABLE = {
    ROLE_LABORATORY: RESULT_TYPES,
    ROLE_PRESCRIBER: RESULT_TYPES,
    ROLE_DMP_CONNECTOR: RESULT_TYPES,
    ROLE_PUBLIC_HEALTH: RESULT_TYPES,
    ROLE_OPERATOR: frozenset(SUPPORTED_TYPES),
}
LOOPBACK_NAMES = frozenset({"localhost"})
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MASK = "***"
SECRET_EXTENSION = "https://sidep.example.fr/fhir/StructureDefinition/subscription-secret"
HANDSHAKE_EVENT = "subscription-requested"


def register(hooks: WriteHooks) -> None:
    hooks.preparers["Subscription"] = prepare


# -- errors ------------------------------------------------------------------------------------
def unprocessable(element: str, en: str, fr: str, code: str = "invalid") -> FhirError:
    return FhirError.of(422, code, en, fr, f"Subscription.{element}")


# -- the write rule ----------------------------------------------------------------------------
def prepare(uow: UnitOfWork, rid: str, resource: dict, previous: Record | None) -> dict:
    """The Subscription as it will be stored, or FhirError (403, 422) with the element at fault."""
    principal = current_principal()
    check_criteria(resource.get("criteria"), principal)
    channel = resource.get("channel") if isinstance(resource.get("channel"), dict) else {}
    check_channel(channel)
    check_secret(resource)
    own = previous if _own(previous, principal) else None
    if not _from_client():
        return resource
    stored = {key: value for key, value in resource.items() if key != "error"}  # the server's to say
    if own is not None and channel.get("header"):
        stored["channel"] = {**channel, "header": _restored_headers(channel["header"], own.resource)}
    if own is not None:
        stored = _restored_secret(stored, own.resource)
    stored["status"] = _status(resource.get("status"), own)
    if own is not None and _delivery_changed(stored, own.resource):
        stored["status"] = REQUESTED  # another endpoint or criteria: a handshake again
    if stored["status"] == REQUESTED:
        request_handshake(uow, rid, principal)
    elif own is not None and own.resource.get("error") and stored["status"] == own.resource.get("status"):
        stored["error"] = own.resource["error"]
    return stored


def request_handshake(uow: UnitOfWork, rid: str, principal: Principal | None) -> None:
    """Committed with the write: the delivery workers record the subscriber (what it may read is
    what it is notified of) and greet its endpoint (workers/jobs/subscription_handshake.py)."""
    who = principal.to_doc() if principal is not None else None
    uow.emit(HANDSHAKE_EVENT, {"subscription": rid, "principal": who}, key=f"Subscription/{rid}")


def _delivery_changed(stored: dict, before: dict) -> bool:
    """Does the update change where or what the Subscription delivers?"""
    return stored.get("criteria") != before.get("criteria") or stored.get("channel") != before.get("channel")


def _from_client() -> bool:
    """A write a client sent through the FHIR API (not the server's own workers)."""
    return has_request_context() and request.blueprint == "fhir"


def _own(previous: Record | None, principal: Principal | None) -> bool:
    """Is `previous` a current Subscription the writer may see? Another's is treated as absent,
    so that what it says (its status) tells nothing; the policy then answers 404."""
    if previous is None or previous.deleted or not previous.resource:
        return False
    return principal is None or not owner_checked(principal, "Subscription") or principal.may_read_own(previous.owner)


def _status(sent: str | None, own: Record | None) -> str:
    kept = (own.resource.get("status") if own else None) or REQUESTED
    if sent in (None, kept):
        return kept
    if sent == REQUESTED:  # created, or asked again after an error: a handshake
        return REQUESTED
    if own is None:
        raise unprocessable(
            "status",
            f"A Subscription is created with status '{REQUESTED}' (the server sets it), not '{sent}'",
            f"Un Subscription est créé avec le statut '{REQUESTED}' (le serveur le fixe), pas '{sent}'",
            "business-rule",
        )
    raise unprocessable(
        "status",
        f"The server sets the status of a Subscription: it is '{kept}', it cannot be set to '{sent}'",
        f"Le serveur fixe le statut d'un Subscription : il est '{kept}', il ne peut devenir '{sent}'",
        "business-rule",
    )


def _restored_headers(headers: list, stored: dict) -> list:
    """Headers sent back masked (`Name: ***`) keep their stored value."""
    previous = {}
    for line in ((stored or {}).get("channel") or {}).get("header") or []:
        name, _, value = line.partition(":")
        previous.setdefault(name.strip().lower(), line)
    restored = []
    for line in headers:
        name, _, value = line.partition(":")
        keep = value.strip() == MASK and previous.get(name.strip().lower())
        restored.append(keep or line)
    return restored


# -- criteria ----------------------------------------------------------------------------------
def check_criteria(criteria: str | None, principal: Principal | None) -> None:
    if not isinstance(criteria, str) or not criteria.strip():
        raise unprocessable("criteria", "criteria is required", "criteria est obligatoire", "required")
    rtype, _, query = criteria.partition("?")
    if rtype not in SUPPORTED_TYPES:
        raise unprocessable(
            "criteria",
            f"criteria must be Type?parameters with a resource type this server stores, not '{rtype}'",
            f"criteria doit être Type?paramètres avec un type de ressource de ce serveur, pas '{rtype}'",
            "not-supported",
        )
    if principal is not None:
        check_subscriber(principal, rtype)
    pairs = parse_qsl(query, keep_blank_values=True)
    for name, _ in pairs:
        if name in RESULT_PARAMETERS:
            raise unprocessable(
                "criteria",
                f"'{name}' shapes search results: it means nothing in a Subscription's criteria",
                f"'{name}' met en forme des résultats de recherche : il n'a pas de sens dans criteria",
                "not-supported",
            )
    try:
        plan_builder(strict=True).build(rtype, pairs)
    except FhirError as error:
        if error.status in (401, 403):
            raise
        issue = error.issues[0]
        raise unprocessable(
            "criteria", f"criteria: {issue.en}", f"criteria : {issue.fr or issue.en}", issue.code
        ) from None


def check_subscriber(principal: Principal, rtype: str) -> None:
    """403 unless the principal's role may subscribe to `rtype` and its scopes let it search them."""
    if rtype in SUBSCRIBABLE.get(principal.role, ()) and principal.scopes.allows(rtype, "s"):
        return
    raise forbidden(
        f"You may not subscribe to {rtype}: your role or your token's scopes do not cover searching it",
        f"Vous ne pouvez pas vous abonner à {rtype} : votre rôle ou les scopes du jeton ne couvrent pas sa recherche",
    )


# -- channel -----------------------------------------------------------------------------------
def check_channel(channel: dict) -> None:
    kind = channel.get("type")
    if kind != REST_HOOK:
        raise unprocessable(
            "channel.type",
            f"channel.type '{kind}' is not supported: this server notifies by '{REST_HOOK}' only",
            f"channel.type '{kind}' n'est pas pris en charge : ce serveur notifie par '{REST_HOOK}' seulement",
            "not-supported",
        )
    check_endpoint(channel.get("endpoint"))
    payload = channel.get("payload")
    if payload is not None and payload.split(";")[0].strip().lower() not in PAYLOADS:
        raise unprocessable(
            "channel.payload",
            f"channel.payload '{payload}' is not supported: application/fhir+json or none",
            f"channel.payload '{payload}' n'est pas pris en charge : application/fhir+json ou rien",
            "not-supported",
        )
    for index, line in enumerate(channel.get("header") or []):
        check_header(line, f"channel.header[{index}]")


def check_endpoint(endpoint: str | None) -> None:
    if not endpoint:
        raise unprocessable(
            "channel.endpoint",
            "A rest-hook Subscription needs channel.endpoint (https://...)",
            "Un Subscription rest-hook exige channel.endpoint (https://...)",
            "required",
        )
    try:
        url = urlsplit(endpoint)
        host = url.hostname
        url.port  # noqa: B018 (a port out of range raises)
    except ValueError:
        host = None
    if not host or any(c.isspace() for c in endpoint) or url.scheme not in ("https", "http"):
        raise unprocessable(
            "channel.endpoint",
            f"channel.endpoint '{endpoint}' is not an absolute https:// URL",
            f"channel.endpoint '{endpoint}' n'est pas une URL absolue https://",
        )
    if url.username is not None or url.password is not None:
        raise unprocessable(
            "channel.endpoint",
            "channel.endpoint must not carry credentials: send them in channel.header",
            "channel.endpoint ne doit pas porter d'identifiants : envoyez-les dans channel.header",
        )
    if url.scheme == "http" and not (settings().subscription_allow_http_loopback and _loopback(host)):
        raise unprocessable(
            "channel.endpoint",
            "channel.endpoint must be https://: notifications carry health data",
            "channel.endpoint doit être en https:// : les notifications portent des données de santé",
        )


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def check_header(line, element: str) -> None:
    name, colon, value = line.partition(":") if isinstance(line, str) else ("", "", "")
    if not colon or not HEADER_NAME.fullmatch(name) or not value.strip() or CONTROL.search(value):
        # the value may be a secret: the message names the header, never its value
        raise unprocessable(
            element,
            f"{element} must be 'Name: value' (a token name, a value without line breaks); header '{name[:40]}'",
            f"{element} doit être 'Nom: valeur' (un nom sans espace, une valeur sans saut de ligne) ; en-tête '{name[:40]}'",
        )


# -- the signing secret ------------------------------------------------------------------------
def secret_of(resource: dict | None) -> str | None:
    """The Subscription's signing secret (its SECRET_EXTENSION), if any."""
    for extension in (resource or {}).get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == SECRET_EXTENSION:
            value = extension.get("valueString")
            return value if isinstance(value, str) else None
    return None


def check_secret(resource: dict) -> None:
    for index, extension in enumerate(resource.get("extension") or []):
        if not isinstance(extension, dict) or extension.get("url") != SECRET_EXTENSION:
            continue
        value = extension.get("valueString")
        if (
            not isinstance(value, str)
            or not value.strip()
            or CONTROL.search(value)
            or set(extension)
            != {
                "url",
                "valueString",
            }
        ):
            raise unprocessable(
                f"extension[{index}]",
                "The signing secret is a valueString without line breaks",
                "Le secret de signature est un valueString sans saut de ligne",
            )


def _restored_secret(stored: dict, before: dict) -> dict:
    """A secret sent back masked keeps its stored value."""
    if secret_of(stored) != MASK:
        return stored
    kept = secret_of(before)
    extensions = [
        {"url": SECRET_EXTENSION, "valueString": kept}
        if isinstance(e, dict) and e.get("url") == SECRET_EXTENSION
        else e
        for e in stored.get("extension") or []
        if kept is not None or not (isinstance(e, dict) and e.get("url") == SECRET_EXTENSION)
    ]
    result = {key: value for key, value in stored.items() if key != "extension"}
    return {**result, "extension": extensions} if extensions else result


# -- answers -----------------------------------------------------------------------------------
def mask_secrets(body):
    """`body` with every Subscription in it (at any depth: Bundles, contained, Parameters) showing
    its channel headers' names only."""
    if isinstance(body, list):
        return [mask_secrets(item) for item in body]
    if not isinstance(body, dict):
        return body
    masked = {key: mask_secrets(value) if isinstance(value, (dict, list)) else value for key, value in body.items()}
    if masked.get("resourceType") == "Subscription" and isinstance(masked.get("channel"), dict):
        headers = masked["channel"].get("header")
        if isinstance(headers, list):
            masked["channel"] = {**masked["channel"], "header": [_masked_header(h) for h in headers]}
    if masked.get("resourceType") == "Subscription" and isinstance(masked.get("extension"), list):
        masked["extension"] = [_masked_secret(e) for e in masked["extension"]]
    return masked


def _masked_secret(extension):
    if isinstance(extension, dict) and extension.get("url") == SECRET_EXTENSION:
        return {"url": SECRET_EXTENSION, "valueString": MASK}
    return extension


def as_shown(resource: dict) -> dict:
    """A stored resource as answers show it (a Subscription's headers masked; others as they are)."""
    return mask_secrets(resource) if resource.get("resourceType") == "Subscription" else resource


def _masked_header(line) -> str:
    name, colon, _ = line.partition(":") if isinstance(line, str) else ("", "", "")
    return f"{name.strip()}: {MASK}" if colon and name.strip() else MASK
