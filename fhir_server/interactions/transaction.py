"""batch and transaction: POST [base] with a Bundle.

A transaction is one MongoDB transaction: every write, its history and its outbox events commit
together, or nothing is stored and the response names the entry that failed. Entries are processed
DELETE, POST, PUT, GET as the specification orders them; `urn:uuid:` references are rewritten to
the ids assigned and conditional references (`Patient?identifier=...`) are resolved first.
A batch runs each entry on its own: one failing entry does not stop the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..context import settings, store
from ..http import fhir_response, lang, parse_etag, prefer, read_json_body
from ..outcome import FhirError, Issue, missing_reference, operation_outcome
from ..resources import SUPPORTED_TYPES, check_resource
from ..search.dates import instant
from ..storage import Record, UnitOfWork
from .conditional import claim_key, criteria_filter, criteria_pairs, matches, several
from .create import create_resource
from .delete import conditional_delete_resource, delete_resource
from .update import update_resource
from .write_hooks import existing_match

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3, "HEAD": 3}
# Within one method the specification sets no order: who performs a result is written before the
# results that name it, wherever the client put it in the Bundle (the performer checks read it).
WRITTEN_FIRST = ("Organization", "Practitioner", "PractitionerRole")
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


def processing_order(entry: "Entry") -> tuple[int, bool, int]:
    return ORDER[entry.method], entry.type not in WRITTEN_FIRST, entry.index


@dataclass
class Entry:
    index: int
    method: str
    url: str
    full_url: str | None
    resource: dict | None
    if_none_exist: str | None
    if_match: int | None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def type(self) -> str:
        return self.url.split("?")[0].split("/")[0]

    @property
    def id(self) -> str | None:
        path = self.url.split("?")[0].split("/")
        return path[1] if len(path) > 1 else None

    @property
    def criteria(self) -> str | None:
        return self.url.partition("?")[2] or None


def transaction_or_batch():
    bundle = read_json_body()
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in ("transaction", "batch"):
        raise FhirError.of(
            400,
            "invalid",
            "POST to the base URL takes a Bundle of type transaction or batch",
            "Un POST sur l'URL de base attend un Bundle de type transaction ou batch",
            "Bundle.type",
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise FhirError.of(
            400,
            "structure",
            "Bundle.entry must be an array of entries",
            "Bundle.entry doit être un tableau d'entrées",
            "Bundle.entry",
        )
    if len(raw_entries) > settings().max_bundle_entries:
        raise FhirError.of(
            413,
            "too-costly",
            f"The Bundle has {len(raw_entries)} entries; at most {settings().max_bundle_entries} are accepted",
            f"Le Bundle a {len(raw_entries)} entrées ; au plus {settings().max_bundle_entries} sont acceptées",
            "Bundle.entry",
        )
    if bundle["type"] == "transaction":
        entries = [parse_entry(i, raw) for i, raw in enumerate(raw_entries)]
        return fhir_response(run_transaction(entries))
    return fhir_response(run_batch(raw_entries))


def parse_entry(index: int, raw: dict) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise FhirError.of(
            400,
            "structure",
            f"{where}: an entry must be a JSON object",
            f"{where} : une entrée doit être un objet JSON",
            where,
        )
    req = _typed(raw, "request", dict, where) or {}
    method = (_typed(req, "method", str, f"{where}.request") or "").upper()
    url = (_typed(req, "url", str, f"{where}.request") or "").lstrip("/")
    if method not in ORDER or not url:
        raise FhirError.of(
            400,
            "invalid",
            f"{where}: request.method (GET, POST, PUT, DELETE) and request.url are required",
            f"{where} : request.method (GET, POST, PUT, DELETE) et request.url sont obligatoires",
            f"{where}.request",
        )
    base = settings().base_url + "/"
    url = url[len(base) :] if url.startswith(base) else url
    if "$" in url.split("?")[0]:
        raise FhirError.of(
            400,
            "not-supported",
            f"{where}: operations ({url}) are not supported inside a Bundle",
            f"{where} : les opérations ({url}) ne sont pas prises en charge dans un Bundle",
            f"{where}.request.url",
        )
    entry = Entry(
        index,
        method,
        url,
        _typed(raw, "fullUrl", str, where),
        _typed(raw, "resource", dict, where),
        _typed(req, "ifNoneExist", str, f"{where}.request"),
        parse_etag(_typed(req, "ifMatch", str, f"{where}.request")),
    )
    if entry.type not in SUPPORTED_TYPES:
        raise FhirError.of(
            404,
            "not-supported",
            f"{where}: resource type '{entry.type}' is not supported",
            f"{where} : le type de ressource '{entry.type}' n'est pas pris en charge",
            f"{where}.request.url",
        )
    if method in ("POST", "PUT"):
        if not isinstance(entry.resource, dict):
            raise FhirError.of(
                400,
                "required",
                f"{where}: a {method} entry needs a resource",
                f"{where} : une entrée {method} doit porter une ressource",
                f"{where}.resource",
            )
        url_id = entry.id if method == "PUT" and not entry.criteria else None
        entry.resource = check_resource(
            entry.type, entry.resource, url_id=url_id, root=f"{where}.resource", in_bundle=True, json_checked=True
        )
    return entry


def _typed(node: dict, name: str, kind: type, where: str):
    """node[name] when absent or of the JSON type the Bundle defines for it, else 400 there."""
    value = node.get(name)
    if value is not None and not isinstance(value, kind):
        expected = ("an object", "un objet") if kind is dict else ("a string", "une chaîne")
        raise FhirError.of(
            400,
            "structure",
            f"{where}.{name} must be {expected[0]}",
            f"{where}.{name} doit être {expected[1]}",
            f"{where}.{name}",
        )
    return value


# -- transaction -------------------------------------------------------------------------------
def run_transaction(entries: list[Entry]) -> dict:
    def work(uow: UnitOfWork) -> list[dict]:
        ids = _assign_ids(uow, entries)
        references = {e.full_url: f"{e.type}/{ids[e.index][0]}" for e in entries if e.full_url and e.index in ids}
        in_bundle = {f"{e.type}/{ids[e.index][0]}" for e in entries if e.index in ids}
        # new copies: the unit of work may run again and must start from the resources as sent
        resources = {
            e.index: _with_references_resolved(uow, e, references, in_bundle) for e in entries if e.resource is not None
        }
        results: dict[int, dict] = {}
        for entry in sorted(entries, key=processing_order):
            if entry.method != "GET":
                results[entry.index] = _in_entry(entry, lambda: _write(uow, entry, ids, resources))
        _judge_whole_bundle(uow, entries, ids, resources)
        return [results.get(e.index) for e in entries]

    results = store().run(work)
    for entry in entries:
        if entry.method in ("GET", "HEAD"):
            results[entry.index] = _read_entry(entry)
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": results}


def _judge_whole_bundle(
    uow: UnitOfWork, entries: list[Entry], ids: dict[int, tuple[str, str]], resources: dict[int, dict]
) -> None:
    """The rules on the state the whole Bundle produces (performers, references), a failure
    located in the entry that wrote the resource at fault."""
    try:
        uow.seal()
    except FhirError as error:
        entry = next(
            (e for e in entries if error.about and e.index in ids and (e.type, ids[e.index][0]) == error.about), None
        )
        if entry is None:
            raise
        if error.reference and entry.index in resources:
            where = _reference_path(resources[entry.index], error.reference, f"{entry.where}.resource")
            for issue in error.issues:
                issue.expression = [where] if where else issue.expression
        raise _located(entry, error) from None


def _assign_ids(uow: UnitOfWork, entries: list[Entry]) -> dict[int, tuple[str, str]]:
    """entry index -> (id, what to do: "create", "update", or "keep" when an If-None-Exist found it)
    for POST and PUT entries."""
    found = _conditional_matches(uow, entries)
    ids: dict[int, tuple[str, str]] = {}
    for entry in entries:
        if entry.method == "POST" and entry.if_none_exist:
            match = found[entry.index]
            ids[entry.index] = (match[0], "keep") if match else (uow.new_id(entry.type), "create")
        elif entry.method == "POST":
            known = _in_entry(entry, lambda: existing_match(uow, entry.type, entry.resource))
            ids[entry.index] = (known, "update") if known else (uow.new_id(entry.type), "create")
        elif entry.method == "PUT" and entry.criteria:
            match = found[entry.index]
            ids[entry.index] = (
                (match[0], "update")
                if match
                else ((entry.resource or {}).get("id") or uow.new_id(entry.type), "create")
            )
        elif entry.method == "PUT":
            ids[entry.index] = (entry.id, "update")
    return ids


def _conditional_matches(uow: UnitOfWork, entries: list[Entry]) -> dict[int, list[str]]:
    """entry index -> the ids its criteria (If-None-Exist, a conditional update's) match: the
    entries of one type looked up together (one query when their criteria differ only in the
    identifier, as a Bundle's Organizations or Observations do), each located if it fails."""
    by_type: dict[str, list[tuple[Entry, str, dict]]] = {}
    for entry in entries:
        criteria = _criteria(entry)
        if criteria is not None:
            query = _in_entry(entry, lambda: criteria_filter(uow, entry.type, criteria_pairs(criteria)))
            by_type.setdefault(entry.type, []).append((entry, criteria, query))
    found: dict[int, tuple[Entry, str, list[str]]] = {}
    for rtype, lookups in by_type.items():
        matched = uow.find_current_each(rtype, [query for _, _, query in lookups], 2)
        for (entry, criteria, _), ids in zip(lookups, matched, strict=True):
            found[entry.index] = (entry, criteria, ids)
    for index in sorted(found):
        entry, criteria, ids = found[index]
        if len(ids) > 1:
            raise _located(entry, several(entry.type, criteria))
    return {index: ids for index, (_, _, ids) in found.items()}


def _criteria(entry: Entry) -> str | None:
    if entry.method == "POST":
        return entry.if_none_exist or None
    if entry.method == "PUT":
        return entry.criteria or None
    return None


def _write(uow: UnitOfWork, entry: Entry, ids: dict, resources: dict) -> dict:
    if entry.method == "DELETE":
        if entry.criteria:
            conditional_delete_resource(uow, entry.type, entry.criteria)
        else:
            delete_resource(uow, entry.type, entry.id)
        return {"response": {"status": "204 No Content"}}
    rid, action = ids[entry.index]
    resource = resources[entry.index]
    if action == "keep":
        return _response(uow.current(entry.type, rid), 200)
    if entry.method == "POST" and action == "create":
        if entry.if_none_exist:
            uow.claim(entry.type, rid, claim_key(entry.type, criteria_pairs(entry.if_none_exist)))
        record, status = create_resource(uow, entry.type, resource, rid=rid)
        return _response(record, status)
    if entry.criteria and action == "create":  # an existing match needs no claim (nor contends for it)
        uow.claim(entry.type, rid, claim_key(entry.type, criteria_pairs(entry.criteria)))
    resource["id"] = rid
    record, status = update_resource(uow, entry.type, rid, resource, entry.if_match)
    return _response(record, status)


def _response(record: Record, status: int) -> dict:
    result: dict = {
        "response": {
            "status": STATUS_TEXT[status],
            "location": f"{record.type}/{record.id}/_history/{record.version}",
            "etag": record.etag,
            "lastModified": instant(record.last_updated),
        }
    }
    mode = prefer("return") or "representation"
    if mode == "representation":
        result["resource"] = record.resource
    elif mode == "OperationOutcome":
        result["response"]["outcome"] = operation_outcome(
            [
                Issue(
                    "information",
                    "informational",
                    f"{record.type}/{record.id} stored",
                    f"{record.type}/{record.id} enregistré",
                )
            ],
            lang(),
        )
    return result


class UnresolvedReference(Exception):
    def __init__(self, value: str, status: int, code: str, en: str, fr: str):
        super().__init__(en)
        self.value, self.status, self.code, self.en, self.fr = value, status, code, en, fr


def _with_references_resolved(uow: UnitOfWork, entry: Entry, references: dict[str, str], in_bundle: set[str]) -> dict:
    """A copy of the entry's resource with urn:uuid: and conditional references resolved, and local
    references checked; a failure names the element (found again only then: paths cost)."""
    try:
        return _resolved(uow, entry.resource, references, in_bundle)
    except UnresolvedReference as failure:
        where = _reference_path(entry.resource, failure.value, f"{entry.where}.resource") or entry.where
        raise FhirError.of(
            failure.status, failure.code, f"{where}: {failure.en}", f"{where} : {failure.fr}", where
        ) from None


def _resolved(uow: UnitOfWork, node, references: dict[str, str], in_bundle: set[str]):
    if isinstance(node, dict):
        return {
            key: _resolve_reference(uow, value, references, in_bundle)
            if key == "reference" and isinstance(value, str)
            else _resolved(uow, value, references, in_bundle)
            if isinstance(value, (dict, list))
            else value
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [
            _resolved(uow, item, references, in_bundle) if isinstance(item, (dict, list)) else item for item in node
        ]
    return node


def _reference_path(node, value: str, path: str) -> str | None:
    """The FHIRPath of the first `reference` element holding `value`."""
    if isinstance(node, dict):
        for key, item in node.items():
            if key == "reference" and item == value:
                return f"{path}.reference"
            found = _reference_path(item, value, f"{path}.{key}") if isinstance(item, (dict, list)) else None
            if found:
                return found
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found = _reference_path(item, value, f"{path}[{i}]")
            if found:
                return found
    return None


def _resolve_reference(uow: UnitOfWork, value: str, references: dict[str, str], in_bundle: set[str]) -> str:
    if value in references:
        return references[value]
    if value.startswith("urn:uuid:") or value.startswith("urn:oid:"):
        raise UnresolvedReference(
            value,
            400,
            "not-found",
            f"'{value}' is not the fullUrl of any entry of the Bundle",
            f"'{value}' n'est le fullUrl d'aucune entrée du Bundle",
        )
    target_type, _, rest = value.partition("?")
    if rest and target_type in SUPPORTED_TYPES:
        found = matches(uow, target_type, criteria_pairs(rest))
        if not found:
            raise UnresolvedReference(
                value,
                404,
                "not-found",
                f"the conditional reference '{value}' matches no resource",
                f"la référence conditionnelle '{value}' ne correspond à aucune ressource",
            )
        if len(found) > 1:
            raise UnresolvedReference(
                value,
                412,
                "multiple-matches",
                f"the conditional reference '{value}' matches more than one resource",
                f"la référence conditionnelle '{value}' correspond à plusieurs ressources",
            )
        return f"{target_type}/{found[0]}"
    parts = value.split("/")
    if len(parts) == 2 and parts[0] in SUPPORTED_TYPES and value not in in_bundle:
        if not uow.referable(parts[0], parts[1]):  # another organisation's answers as a missing one
            raise UnresolvedReference(value, 404, "not-found", *missing_reference(value))
    return value


def _in_entry(entry: Entry, action):
    try:
        return action()
    except FhirError as error:
        raise _located(entry, error) from None


def _located(entry: Entry, error: FhirError) -> FhirError:
    """The same error, saying which entry of the Bundle it is about."""
    for issue in error.issues:
        if not issue.en.startswith("Bundle.entry"):
            issue.en = f"{entry.where} ({entry.method} {entry.url}): {issue.en}"
            issue.fr = f"{entry.where} ({entry.method} {entry.url}) : {issue.fr or issue.en}"
        if not any(e.startswith(entry.where) for e in issue.expression):
            issue.expression = [entry.where] + issue.expression
    return error


# -- reads inside a Bundle ----------------------------------------------------------------------
def _read_entry(entry: Entry) -> dict:
    from ..context import plan_builder
    from . import search as search_interaction

    path = entry.url.split("?")[0].split("/")
    try:
        if len(path) == 1:
            plan = plan_builder().build(entry.type, criteria_pairs(entry.criteria) if entry.criteria else [])
            return {"resource": search_interaction.run(plan), "response": {"status": "200 OK"}}
        record = (
            store().vread(entry.type, path[1], int(path[3]))
            if len(path) == 4 and path[3].isdigit()
            else store().read(entry.type, path[1])
        )
        return {
            "resource": record.resource,
            "response": {"status": "200 OK", "etag": record.etag, "lastModified": instant(record.last_updated)},
        }
    except FhirError as error:
        return _failed(entry.index, error)


# -- batch -------------------------------------------------------------------------------------
def run_batch(raw_entries: list[dict]) -> dict:
    results = []
    for index, raw in enumerate(raw_entries):
        try:
            entry = parse_entry(index, raw)
            if entry.method in ("GET", "HEAD"):
                results.append(_read_entry(entry))
            else:
                results.append(run_transaction([entry])["entry"][0])
        except FhirError as error:
            results.append(_failed(index, error))
    return {"resourceType": "Bundle", "type": "batch-response", "entry": results}


def _failed(index: int, error: FhirError) -> dict:
    return {"response": {"status": f"{error.status}", "outcome": operation_outcome(error.issues, lang())}}
