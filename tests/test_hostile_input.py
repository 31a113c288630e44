"""A hostile laboratory: generated malformed requests to every interaction, as laboratory B of two
laboratories made by the synthetic generator, over the app with OAuth2, authorisation and audit on.

Each test sends batches of requests built from B's own valid ones (its result Bundle, its
resources, its ids, A's ids) with mutations: wrong JSON types, nulls, empty objects and arrays,
deep nesting, huge strings, odd unicode (escaped lone surrogates, NUL, right-to-left marks),
MongoDB operator strings and objects (`{"$where": ...}`, `{"$gt": ""}`), keys starting with `$` or
holding a `.`, malformed references, query strings with the same, and hostile headers. Asserted:
no 5xx; every error body is an OperationOutcome; no stored resource holds a `$` or dotted key
(none is ever read as an operator); a 2xx answer to B never shows one of A's results it did not
name itself; and A's stored documents are byte for byte what they were before B's requests.

Hypothesis is derandomized (the same requests on every run) and keeps no example database. The
figures (requests sent, statuses seen) are printed: `pytest -s tests/test_hostile_input.py`.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fhir_server.search.registry import parameters_for
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories

LAB_A, LAB_B = make_laboratories(random.Random(17), 2)
RESULT_TYPES = ("Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport")
FHIR_JSON = "application/fhir+json"
BATCH = 25  # requests per generated example
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", 20))  # batches per test; more for a longer hunt
FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=EXAMPLES,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # a failure names its request: no shrinking
    suppress_health_check=list(HealthCheck),
)


# -- hostile values ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Raw:
    """JSON text put as is where a value goes (what json.dumps cannot write: depth, NaN...)."""

    text: str


RAW_VALUES = [
    Raw("[" * 2000 + "]" * 2000),
    Raw('{"a":' * 80 + "1" + "}" * 80),
    Raw("1.50"),
    Raw("1e400"),
    Raw("-0"),
    Raw("123456789012345678901234567890"),
    Raw("18446744073709551616"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw('"\\ud800"'),
    Raw('"a\\udfffb"'),
    Raw('"\\u0000"'),
    Raw("1.0E-3"),
]
TEXTS = [
    "$where",
    "$gt",
    '{"$gt": ""}',
    "'; return true; var x='",
    "this.a == 1 || true",
    "a.b",
    "$",
    "..",
    "../../etc/passwd",
    "%00",
    "%zz",
    "\\",
    "true",
    "null",
    "[]",
    "{}",
    "\u202eevil\u200f",
    "\u200f\u200e",
    "😀",
    "ﷺ" * 40,
    "e\u0301" * 30,
    "\ufeff",
    "\uffff",
    "ß" * 200,
    "x" * 300,
]  # FHIR strings all the same
STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "\x1b[31m",
    "Patient//x",
    "./Patient/x",
    "Patient/x?",
    "Patient/x#y",
    "#",
    "#x",
    "urn:uuid:",
    "urn:uuid:nowhere",
    "Patient?",
    "Patient?identifier=x",
    "http://evil.example/Patient/1",
    "Patient/" + "x" * 65,
] + TEXTS
HUGE = ["x" * 5000, "x" * 300_000, "x" * 1_900_000, "x" * (2 * 1024 * 1024 + 1)]
OPERATOR_OBJECTS = [
    {"$where": "sleep(1000) || true"},
    {"$gt": ""},
    {"$ne": None},
    {"$regex": ".*"},
    {"$in": ["a"]},
    {"a.b": 1},
    {"$set": {"res": 1}},
    {"$expr": {"$eq": [1, 1]}},
]
HOSTILE_KEYS = ["$where", "$gt", "a.b", ".", "", "\x00", "_", "__proto__", "constructor", "é", "resourceType ", "$" * 3]


def deep(depth: int):
    node = "leaf"
    for level in range(depth):
        node = {"extension": [node]} if level % 2 else [node]
    return node


@st.composite
def hostile_value(draw, pool: list[str]):
    kind = draw(st.integers(-1, 11))
    if kind == -1:
        return draw(st.sampled_from(HUGE))
    if kind == 0:
        return draw(st.sampled_from(STRINGS))
    if kind == 1:
        return copy.deepcopy(draw(st.sampled_from(OPERATOR_OBJECTS)))
    if kind == 2:
        return draw(st.sampled_from([None, {}, [], [None], [{}], [[]], {"": None}]))
    if kind == 3:
        return draw(
            st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans())
        )
    if kind == 4:
        return draw(st.text(max_size=40))
    if kind == 5:
        return draw(st.sampled_from(RAW_VALUES))
    if kind == 6:
        return deep(draw(st.sampled_from([10, 70, 300])))
    if kind == 7:
        return {"reference": draw(st.sampled_from(STRINGS + [f"Patient/{i}" for i in pool]))}
    if kind == 8:
        return draw(st.sampled_from(pool))
    if kind == 9:
        return [draw(st.sampled_from(STRINGS))] * draw(st.integers(1, 3))
    if kind == 10:
        return {draw(st.sampled_from(HOSTILE_KEYS)): draw(st.sampled_from(STRINGS))}
    return draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))


def paths(node, prefix=()):
    """Every location in a JSON document, as key/index tuples."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


@st.composite
def mutated(draw, document: dict, pool: list[str]):
    """A deep copy of `document` with up to three mutations at generated places, shallow ones
    (a Bundle's entries, their request) as likely as deep ones."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(0, 3))):
        depth = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4, 6]))
        where = draw(st.sampled_from([p for p in paths(doc) if 1 <= len(p) <= depth] or [()]))
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1] if where else None
        action = draw(st.sampled_from(ACTIONS))
        if last is None or action == "key":  # a hostile key beside the others
            target = parent[last] if last is not None and isinstance(parent[last], dict) else doc
            target[draw(st.sampled_from(HOSTILE_KEYS))] = draw(hostile_value(pool))
        elif action == "delete":
            del parent[last]
        elif action == "wrap":
            parent[last] = [parent[last]]
        elif action == "unwrap" and isinstance(parent[last], list) and parent[last]:
            parent[last] = parent[last][0]
        elif action == "empty":
            parent[last] = draw(st.sampled_from([None, {}, [], "", [None], [{}]]))
        elif action == "retype":  # the same content, the other JSON shape
            value = parent[last]
            parent[last] = (
                value[0]
                if isinstance(value, list) and value
                else [value]
                if isinstance(value, dict)
                else {"value": value}
                if not isinstance(value, list)
                else {}
            )
        elif action == "text" and isinstance(parent[last], str):
            parent[last] = draw(st.sampled_from(TEXTS))
        elif action == "inflate":  # long texts under it, within the body limit: the index multiplies them
            budget = draw(st.sampled_from([300_000, 4_500_000]))
            parent[last] = inflated(parent[last], min(1_900_000, budget // max(1, texts(parent[last]))))
        else:
            parent[last] = draw(hostile_value(pool))
    return doc


ACTIONS = [
    "key",
    "delete",
    "wrap",
    "unwrap",
    "value",
    "value",
    "empty",
    "empty",
    "empty",
    "retype",
    "retype",
    "text",
    "inflate",
]


def texts(node) -> int:
    if isinstance(node, str):
        return 1
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return sum(texts(child) for child in children)


def inflated(node, size: int):
    if isinstance(node, str):
        return "x" * size
    if isinstance(node, dict):
        return {
            k: inflated(v, size) if k not in ("resourceType", "reference", "system") else v for k, v in node.items()
        }
    if isinstance(node, list):
        return [inflated(v, size) for v in node]
    return node


def dumps(document) -> bytes:
    """JSON text with Raw values spliced in; lone surrogates written escaped."""
    raws: list[str] = []

    def default(value):
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"\x01RAW{len(raws) - 1}\x01"
        raise TypeError(type(value).__name__)

    text = json.dumps(document, default=default)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x01RAW{i}\x01"), raw)
    return text.encode("utf-8", "surrogatepass")


# -- the world: two laboratories, B attacking ------------------------------------------------------
@dataclass
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: dict = field(default_factory=dict)


@dataclass
class World:
    secured: object
    http: object  # Flask's test client
    token_b: str
    ids_a: dict
    ids_b: dict
    bundle_b: dict
    resources_b: dict
    mode: str
    sent: Counter = field(default_factory=Counter)

    @property
    def pool(self) -> list[str]:
        return [i for ids in (self.ids_a, self.ids_b) for values in ids.values() for i in values]

    def a_ids(self) -> set[str]:
        return {i for rtype in RESULT_TYPES for i in self.ids_a.get(rtype, [])}

    def send(self, request: Request) -> None:
        headers = {"Accept": FHIR_JSON, **request.headers, "Authorization": f"Bearer {self.token_b}"}
        if request.body is not None:
            headers.setdefault("Content-Type", FHIR_JSON)
        response = self.http.open(request.path, method=request.method, data=request.body, headers=headers)
        self.sent[response.status_code] += 1
        text = response.get_data()
        described = f"{request.method} {request.path[:300]} {(request.body or b'')[:300]!r} -> {text[:500]!r}"
        assert response.status_code < 500, described
        if response.status_code >= 400:
            assert json.loads(text)["resourceType"] == "OperationOutcome", described
        elif response.mimetype == FHIR_JSON and text:
            shown = returned_ids(json.loads(text)) & self.a_ids()
            assert not shown, f"A's results {shown} shown to B: {described}"


def returned_ids(body: dict) -> set[str]:
    """The ids of the resources an answer carries (itself, or its Bundle's entries)."""
    resources = (
        [e.get("resource") or {} for e in body.get("entry", [])] if body.get("resourceType") == "Bundle" else [body]
    )
    return {r["id"] for r in resources if isinstance(r.get("id"), str) and r.get("resourceType") in RESULT_TYPES}


def owned_documents(db, owner: str) -> dict:
    """Every stored document owned by `owner` but the audit trail, as raw BSON bytes."""
    raw = CodecOptions(document_class=RawBSONDocument)
    return {
        (name, doc["_id"]): doc.raw
        for name in db.list_collection_names()
        if name != "AuditEvent"
        for doc in db.get_collection(name, codec_options=raw).find({"org": owner})
    }


def operator_keys(node, path="") -> list[str]:
    if isinstance(node, dict):
        return [f"{path}.{k}" for k in node if k.startswith("$") or "." in k] + [
            p for k, v in node.items() for p in operator_keys(v, f"{path}.{k}")
        ]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in operator_keys(v, f"{path}[{i}]")]
    return []


def post_result(session, lab, seed):
    bundle = generate_result_bundle(random.Random(seed), lab, include_legal_entity=False)
    response = session.post("", json=bundle)
    assert response.status_code == 200, response.text
    ids: dict = {}
    resources: dict = {}
    for entry in response.json()["entry"]:
        resources[entry["resource"]["resourceType"]] = entry["resource"]
        rtype, rid = entry["response"]["location"].split("/")[:2]
        ids.setdefault(rtype, []).append(rid)
    return bundle, ids, resources


@pytest.fixture(params=["plain R4"])
def world(request, secured_factory):
    """B attacking, A's results stored; the server in plain R4 mode, or with the SI-DEP profiles
    (tests parametrize `world` with "profiles")."""
    secured = secured_factory(enforce_profiles=request.param == "profiles")
    a = secured.client_session(LAB_A)
    client_id, secret = secured.register(LAB_B)
    token_b = secured.token(client_id, secret)
    ids_a: dict = {}
    for seed in (1, 2):
        for rtype, values in post_result(a, LAB_A, seed)[1].items():
            ids_a.setdefault(rtype, []).extend(values)
    bundle_b, ids_b, resources_b = post_result(secured.session(token_b), LAB_B, 3)
    world = World(secured, secured.app.test_client(), token_b, ids_a, ids_b, bundle_b, resources_b, request.param)
    before = owned_documents(secured.store.db, LAB_A.finess)
    assert before
    yield world
    after = owned_documents(secured.store.db, LAB_A.finess)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))[:3]
    for name in secured.store.db.list_collection_names():
        for doc in secured.store.db[name].find({"res": {"$exists": True}}, {"res": 1}):
            assert not operator_keys(doc["res"]), (name, doc["_id"], operator_keys(doc["res"]))
    print(f"\n{world.mode}: {sum(world.sent.values())} generated requests, statuses {dict(sorted(world.sent.items()))}")


def run(world: World, requests) -> None:
    """Send generated batches of requests, each built by a strategy over the world (half as many
    with the profiles on: the same code paths but for the profile checks)."""
    examples = EXAMPLES if world.mode == "plain R4" else EXAMPLES // 2

    @settings(FUZZ, max_examples=examples)
    @given(st.lists(requests, min_size=BATCH, max_size=BATCH))
    def batch(items):
        for request in items:
            world.send(request)

    batch()
    assert sum(world.sent.values()) == BATCH * examples


# -- request strategies --------------------------------------------------------------------------
HEADERS = st.dictionaries(
    st.sampled_from(
        ["Content-Type", "Accept", "Prefer", "If-Match", "If-None-Exist", "Accept-Language", "Transfer-Encoding"]
    ),
    st.sampled_from(
        [
            "application/fhir+json",
            "application/json",
            "text/plain",
            "application/xml",
            "*/*",
            "application/fhir+json; charset=latin-1",
            "return=minimal",
            "return=OperationOutcome",
            "handling=strict",
            'W/"1"',
            'W/"x"',
            "W/",
            "identifier=$where",
            "identifier=a|b",
            "fr",
            "en;q=0",
            "\u00e9",
            "",
            "chunked",
        ]
    ),
    max_size=2,
)


def ids_of(world: World) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(world.pool),
        st.sampled_from(STRINGS).map(lambda s: quote(s, safe="")),
        st.sampled_from(["%zz", "%00", "..", "a/b", "$where", "x" * 65, "%2e%2e", "é"]),
    )


def query_of(world: World, rtype: str) -> st.SearchStrategy[str]:
    names = sorted(parameters_for(rtype)) + [
        "_id",
        "_lastUpdated",
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_total",
        "_elements",
        "_cursor",
        "_has:Observation:subject:code",
        "subject:Patient.name",
        "subject.name",
        "identifier:text",
        "name:exact",
        "code:not",
        "date:missing",
        "$where",
        "a.b",
        "",
        "_count:x",
        "x" * 300,
    ]
    values = st.one_of(
        st.sampled_from(STRINGS + HUGE[:1]),
        st.text(max_size=20),
        st.sampled_from(world.pool),
        st.sampled_from(
            [
                "gt2021-01-01",
                "ap2021",
                "2021-13-45",
                "le",
                "|",
                "a|",
                "|b",
                "a,b,c",
                "\\,",
                "true",
                "-date",
                "Observation:subject",
                "Observation:subject:Patient",
                "count",
                "١٢",
                "²",
                "99999999999999999999",
                "-1",
            ]
        ),
        st.sampled_from(
            [
                base64.urlsafe_b64encode(json.dumps(c).encode()).decode()
                for c in (
                    {"d": "n", "k": [{"$gt": ""}, "x"]},
                    {"d": "n", "k": [None, {"$ne": None}]},
                    {"d": "n", "k": "x"},
                    [1],
                    {"d": "p"},
                    {"ts": {"$gt": ""}, "key": "x"},
                    {"ts": {"$d": "nonsense"}, "key": 1},
                    {"d": "n", "k": [{"$d": "2021-01-01T00:00:00"}, "a"]},
                )
            ]
        ),
    )
    pair = st.tuples(st.sampled_from(names), values).map(lambda p: f"{quote(p[0], safe=':._')}={quote(p[1], safe='')}")
    raw = st.sampled_from(["%%%", "=&=&", "a=%ZZ", "&&", "_count=%00", "name", "=x", "%F0%28%8C%28=1"])
    return st.lists(st.one_of(pair, raw), min_size=1, max_size=4).map("&".join)


def reads(world: World):
    rtype = st.sampled_from(RESULT_TYPES + ("Organization", "CodeSystem", "Binary", "NoSuchType", "$where"))
    return st.one_of(
        st.builds(lambda t, i: Request("GET", f"/fhir/{t}/{i}"), rtype, ids_of(world)),
        st.builds(
            lambda t, i, v: Request("GET", f"/fhir/{t}/{i}/_history/{v}"),
            rtype,
            ids_of(world),
            st.sampled_from(["1", "2", "0", "-1", "x", "99999999999999999999", "١", "%00", "$gt"]),
        ),
        st.builds(
            lambda t, i, q: Request("GET", f"/fhir/{t}/{i}/_history?{q}"),
            rtype,
            ids_of(world),
            query_of(world, "Patient"),
        ),
        st.builds(lambda t, q: Request("GET", f"/fhir/{t}/_history?{q}"), rtype, query_of(world, "Patient")),
        st.builds(lambda q: Request("GET", f"/fhir/_history?{q}"), query_of(world, "Patient")),
    )


def searches(world: World):
    rtype = st.sampled_from(RESULT_TYPES + ("Organization", "ValueSet"))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    return st.one_of(
        rtype.flatmap(lambda t: query_of(world, t).map(lambda q: Request("GET", f"/fhir/{t}?{q}"))),
        rtype.flatmap(
            lambda t: query_of(world, t).map(lambda q: Request("POST", f"/fhir/{t}/_search", q.encode(), form))
        ),
        rtype.flatmap(
            lambda t: st.tuples(query_of(world, t), HEADERS).map(
                lambda p: Request("POST", f"/fhir/{t}/_search?{p[0]}", p[0].encode(), {**form, **p[1]})
            )
        ),
        rtype.flatmap(
            lambda t: st.tuples(query_of(world, t), HEADERS).map(
                lambda p: Request("GET", f"/fhir/{t}?{p[0]}", None, p[1])
            )
        ),
    )


def headers() -> st.SearchStrategy[dict]:
    """Mostly none: a request refused for its headers alone reaches no handler."""
    return st.one_of(st.just({}), st.just({}), st.just({}), HEADERS)


def writes(world: World):
    rtype = st.sampled_from(RESULT_TYPES + ("Organization",))

    def body(t):
        return mutated(world.resources_b[t], world.pool).map(dumps)

    def own_id(t):
        return world.ids_b[t][0]

    return st.one_of(
        rtype.flatmap(lambda t: st.tuples(body(t), headers()).map(lambda p: Request("POST", f"/fhir/{t}", *p))),
        rtype.flatmap(
            lambda t: st.tuples(body(t), headers()).map(lambda p: Request("PUT", f"/fhir/{t}/{own_id(t)}", *p))
        ),
        rtype.flatmap(
            lambda t: st.tuples(ids_of(world), body(t)).map(lambda p: Request("PUT", f"/fhir/{t}/{p[0]}", p[1]))
        ),
        rtype.flatmap(
            lambda t: st.tuples(query_of(world, t), body(t)).map(lambda p: Request("PUT", f"/fhir/{t}?{p[0]}", p[1]))
        ),
        rtype.flatmap(lambda t: query_of(world, t).map(lambda q: Request("DELETE", f"/fhir/{t}?{q}"))),
        st.builds(lambda t, i: Request("DELETE", f"/fhir/{t}/{i}"), rtype, ids_of(world)),
        st.builds(
            lambda b, h: Request("POST", "/fhir/Patient", b, h),
            st.sampled_from(
                [
                    b"",
                    b"{",
                    b"[]",
                    b"null",
                    b'"x"',
                    b"{}",
                    b"\xff\xfe",
                    b'{"resourceType": null}',
                    b'{"resourceType": "Patient", "resourceType": "Observation"}',
                    b'{"resourceType": ["Patient"]}',
                    b"\x00",
                ]
            ),
            HEADERS,
        ),
    )


def bundles(world: World):
    def as_type(kind):
        return lambda doc: dumps({**doc, "type": kind} if isinstance(doc, dict) else doc)

    kinds = st.sampled_from(["transaction", "batch"])
    return kinds.flatmap(lambda kind: mutated(world.bundle_b, world.pool).map(as_type(kind))).map(
        lambda body: Request("POST", "/fhir", body)
    )


def operations(world: World):
    rtype = st.sampled_from(RESULT_TYPES + ("Organization", "Bundle"))
    dr = st.one_of(st.sampled_from(world.ids_b["DiagnosticReport"] + world.ids_a["DiagnosticReport"]), ids_of(world))
    words = st.one_of(
        st.sampled_from(STRINGS + HUGE[:1]),
        st.sampled_from(world.pool),
        st.sampled_from(
            [
                "create",
                "update",
                "delete",
                "pdf",
                "png",
                "text",
                "json",
                "recovery",
                "test",
                "http://loinc.org",
                "94500-6",
                "fr",
                "en-GB",
                "10",
                "-1",
            ]
        ),
    )

    def parameters(names):
        return st.lists(
            st.tuples(
                st.sampled_from(names),
                st.one_of(
                    words.map(lambda w: ("valueString", w)),
                    hostile_value(world.pool).map(lambda v: ("valueCode", v)),
                    hostile_value(world.pool).map(lambda v: ("resource", v)),
                    hostile_value(world.pool).map(lambda v: ("valueCoding", v)),
                ),
            ),
            max_size=4,
        ).map(
            lambda parts: dumps(
                {"resourceType": "Parameters", "parameter": [{"name": n, kv[0]: kv[1]} for n, kv in parts]}
            )
        )

    def query(names):
        return st.lists(st.tuples(st.sampled_from(names), words), max_size=4).map(
            lambda pairs: "&".join(f"{quote(n)}={quote(str(v), safe='')}" for n, v in pairs)
        )

    validate_names = ["resource", "mode", "profile", "$where"]
    certificate_names = ["format", "certificate", "_format", "a.b"]
    lookup_names = [
        "system",
        "code",
        "coding",
        "displayLanguage",
        "url",
        "codeableConcept",
        "display",
        "filter",
        "count",
        "offset",
        "version",
    ]
    accept = st.sampled_from(["application/pdf", "image/png", "text/plain", FHIR_JSON, "*/*", "application/xml", ""])
    return st.one_of(
        rtype.flatmap(
            lambda t: mutated(world.resources_b.get(t, world.bundle_b), world.pool).map(
                lambda doc: Request("POST", f"/fhir/{t}/$validate", dumps(doc))
            )
        ),
        rtype.flatmap(lambda t: parameters(validate_names).map(lambda b: Request("POST", f"/fhir/{t}/$validate", b))),
        st.builds(
            lambda t, i, q: Request("GET", f"/fhir/{t}/{i}/$validate?{q}"), rtype, ids_of(world), query(validate_names)
        ),
        st.builds(
            lambda i, q, a: Request(
                "GET", f"/fhir/DiagnosticReport/{i}/$generate-certificate?{q}", headers={"Accept": a}
            ),
            dr,
            query(certificate_names),
            accept,
        ),
        st.builds(
            lambda i, b: Request("POST", f"/fhir/Observation/{i}/$generate-certificate", b),
            st.sampled_from(world.ids_b["Observation"] + world.ids_a["Observation"]),
            parameters(certificate_names),
        ),
        st.builds(
            lambda op, q: Request("GET", f"/fhir/{op}?{q}"),
            st.sampled_from(
                [
                    "CodeSystem/$lookup",
                    "ValueSet/$validate-code",
                    "ValueSet/$expand",
                    "ValueSet/specimen-types/$expand",
                    "ValueSet/nowhere/$validate-code",
                    "$reload-terminology",
                    "Patient/$lookup",
                    "$nothing",
                ]
            ),
            query(lookup_names),
        ),
        st.builds(
            lambda op, b: Request("POST", f"/fhir/{op}", b),
            st.sampled_from(
                [
                    "CodeSystem/$lookup",
                    "ValueSet/$validate-code",
                    "ValueSet/$expand",
                    "ValueSet/specimen-types/$validate-code",
                    "$reload-terminology",
                ]
            ),
            parameters(lookup_names),
        ),
    )


# -- the tests -------------------------------------------------------------------------------------
def test_hostile_reads_and_history(world):
    run(world, reads(world))


def test_hostile_searches(world):
    run(world, searches(world))


BOTH_MODES = pytest.mark.parametrize("world", ["plain R4", "profiles"], indirect=True)


@BOTH_MODES
def test_hostile_writes(world):
    run(world, writes(world))


@BOTH_MODES
def test_hostile_transactions_and_batches(world):
    run(world, bundles(world))


@BOTH_MODES
def test_hostile_operations(world):
    run(world, operations(world))


# -- every element, every FHIR JSON violation ------------------------------------------------------
VIOLATIONS = [(None, ""), ({}, ""), ([], ""), ("", ""), ([None], "[0]")]


def fhirpath(root: str, path: tuple) -> str:
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def placed(document: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(document)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


@BOTH_MODES
def test_every_element_refuses_null_and_empty_values_where_it_is(world):
    """Not drawn at random: each element of B's resources (all of the Patient's, two levels of the
    others') gets each violation in turn, by create and update alternately, and for the Patient's
    top-level elements inside the transaction Bundle too. Each is a 400 naming that element."""
    sent = 0
    for rtype, resource in world.resources_b.items():
        depth = 9 if rtype == "Patient" else 2
        for path in (p for p in paths(resource) if 1 <= len(p) <= depth and p[0] not in ("resourceType", "id")):
            for value, suffix in VIOLATIONS:
                method, url = ("POST", f"/fhir/{rtype}") if sent % 2 else ("PUT", f"/fhir/{rtype}/{resource['id']}")
                response = world.http.open(
                    url,
                    method=method,
                    data=dumps(placed(resource, path, value)),
                    headers={"Authorization": f"Bearer {world.token_b}", "Content-Type": FHIR_JSON},
                )
                sent += 1
                world.sent[response.status_code] += 1
                assert response.status_code == 400, (method, path, value, response.get_data(as_text=True))
                issue = response.get_json()["issue"][0]
                assert issue["expression"] == [fhirpath(rtype, path) + suffix], (path, value, issue)
    index = next(i for i, e in enumerate(world.bundle_b["entry"]) if e["resource"]["resourceType"] == "Patient")
    for key in world.bundle_b["entry"][index]["resource"]:
        for value, suffix in VIOLATIONS:
            for kind in ("transaction", "batch"):
                bundle = placed({**world.bundle_b, "type": kind}, ("entry", index, "resource", key), value)
                response = world.http.open(
                    "/fhir",
                    method="POST",
                    data=dumps(bundle),
                    headers={"Authorization": f"Bearer {world.token_b}", "Content-Type": FHIR_JSON},
                )
                sent += 1
                world.sent[response.status_code] += 1
                assert response.status_code == 400, (kind, key, value, response.get_data(as_text=True))
                where = f"Bundle.entry[{index}].resource.{key}{suffix}"
                assert response.get_json()["issue"][0]["expression"] == [where]
    assert sent > 600  # the sweep ran over the resources (685 requests today)


def reshaped(value) -> list:
    """The same content in the other JSON shapes: in a list, out of its list, a text as a number."""
    shapes = [[value]]
    if isinstance(value, list) and value:
        shapes.append(value[0])
    if isinstance(value, str):
        shapes += [1, True]
    return shapes


@BOTH_MODES
def test_every_element_in_the_wrong_shape_is_refused_and_validated(world):
    """Each element of B's Patient (two levels of its other resources) in a list, out of its list,
    or a number for a text: a create is a 400, $validate a 200 OperationOutcome naming an error."""
    sent = 0
    for rtype, resource in world.resources_b.items():
        depth = 9 if rtype == "Patient" else 2
        for path in (p for p in paths(resource) if 1 <= len(p) <= depth and p[0] not in ("resourceType", "meta")):
            parent = resource
            for step in path:
                parent = parent[step]
            for value in reshaped(parent):
                body = dumps(placed(resource, path, value))
                headers = {"Authorization": f"Bearer {world.token_b}", "Content-Type": FHIR_JSON}
                created = world.http.open(f"/fhir/{rtype}", method="POST", data=body, headers=headers)
                validated = world.http.open(f"/fhir/{rtype}/$validate", method="POST", data=body, headers=headers)
                sent += 2
                world.sent[created.status_code] += 1
                world.sent[validated.status_code] += 1
                assert created.status_code == 400, (path, value, created.get_data(as_text=True))
                assert validated.status_code == 200, (path, value, validated.get_data(as_text=True))
                assert any(i["severity"] == "error" for i in validated.get_json()["issue"]), (path, value)
    assert sent > 400  # the sweep ran over the resources (460 requests today)


# -- the reported cases, one by one ---------------------------------------------------------------
@pytest.fixture(params=["plain R4", "profiles"])
def mode_client(request, settings):
    from fhir_server import create_app

    from .conftest import FhirClient

    return FhirClient(create_app(settings.but(enforce_profiles=request.param == "profiles")).test_client())


# a type without an SI-DEP profile: only the entry's shape decides, in both modes
ENTRY = {
    "fullUrl": "urn:uuid:6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
    "resource": {"resourceType": "Binary", "contentType": "text/plain"},
    "request": {"method": "POST", "url": "Binary"},
}


@pytest.mark.parametrize(
    "entries,where",
    [
        ([{**ENTRY, "request": {"method": 1, "url": "Binary"}}], "Bundle.entry[0].request.method"),
        ([{**ENTRY, "request": {"method": "POST", "url": ["Binary"]}}], "Bundle.entry[0].request.url"),
        ([{**ENTRY, "request": "POST Binary"}], "Bundle.entry[0].request"),
        (
            [{**ENTRY, "request": {"method": "POST", "url": "Binary", "ifNoneExist": ["_id=x"]}}],
            "Bundle.entry[0].request.ifNoneExist",
        ),
        ([{**ENTRY, "request": {"method": "PUT", "url": "Binary/a", "ifMatch": 1}}], "Bundle.entry[0].request.ifMatch"),
        (["Binary"], "Bundle.entry[0]"),
        ([ENTRY, 42], "Bundle.entry[1]"),
        ([{**ENTRY, "fullUrl": {"a": 1}}], "Bundle.entry[0].fullUrl"),
        ([{**ENTRY, "resource": ["Patient"]}], "Bundle.entry[0].resource"),
    ],
)
def test_bundle_entries_of_the_wrong_json_type_are_400_where_they_are(mode_client, entries, where):
    response = mode_client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == [where]
    assert mode_client.get("/fhir/Binary?_total=accurate").get_json()["total"] == 0  # nothing of the transaction
    response = mode_client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert response.status_code == 200, response.get_data(as_text=True)  # a batch answers for each entry
    failed = response.get_json()["entry"][int(where[13])]["response"]
    assert failed["status"] == "400" and failed["outcome"]["issue"][0]["expression"] == [where]


@pytest.mark.parametrize("entry", [{"a": 1}, "entries", 3])
def test_a_bundle_entry_that_is_no_array_is_400(mode_client, entry):
    for kind in ("transaction", "batch"):
        response = mode_client.post("/fhir", json={"resourceType": "Bundle", "type": kind, "entry": entry})
        assert response.status_code == 400 and response.get_json()["issue"][0]["expression"] == ["Bundle.entry"]


def a_patient(mode_client) -> dict:
    bundle = generate_result_bundle(random.Random(9))
    response = mode_client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    return next(e["resource"] for e in response.get_json()["entry"] if e["resource"]["resourceType"] == "Patient")


@pytest.mark.parametrize("element", ["identifier", "telecom", "extension", "address"])
def test_null_and_empty_elements_are_refused_and_the_patient_stays_updatable(mode_client, element):
    patient = a_patient(mode_client)
    for value in (None, [], {}, [None]):
        for method, url in (("PUT", f"/fhir/Patient/{patient['id']}"), ("POST", "/fhir/Patient")):
            body = {**patient, element: value}
            response = mode_client._call(method, url, json=body)
            assert response.status_code == 400, response.get_data(as_text=True)
            where = f"Patient.{element}" + ("[0]" if value == [None] else "")
            assert response.get_json()["issue"][0]["expression"] == [where]
    assert mode_client.get(f"/fhir/Patient/{patient['id']}").get_json()["meta"]["versionId"] == "1"
    updated = mode_client.put(f"/fhir/Patient/{patient['id']}", json={**patient, "birthDate": "1990-01-01"})
    assert updated.status_code == 200, updated.get_data(as_text=True)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(name={"family": "Martin"}),  # an object where a list is expected
        lambda r: r.update(telecom={"system": "phone", "value": "0612345678"}),
        lambda r: r.update(gender=["female"]),  # a list where a code is expected
        lambda r: r.update(birthDate={"value": "1990-01-01"}),
        lambda r: r.update(address=[["Paris"]]),
        lambda r: r.update(identifier=[{"system": ["urn:oid:1.2.250.1.213.1.4.8"], "value": {"v": "1"}}]),
        lambda r: r.update(extension={"url": "http://x"}),
        lambda r: r["name"][0].update(given="Jean"),
    ],
)
def test_validate_answers_the_wrong_shapes_with_an_outcome(mode_client, change):
    patient = a_patient(mode_client)
    changed = copy.deepcopy(patient)
    change(changed)
    for body in (changed, {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": changed}]}):
        response = mode_client.post("/fhir/Patient/$validate", json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        issues = response.get_json()["issue"]
        assert any(i["severity"] == "error" and i["expression"][0].startswith("Patient.") for i in issues), issues


def test_operator_keys_are_refused_and_operator_strings_stored_inertly(mode_client):
    patient = a_patient(mode_client)
    for body in (
        {**patient, "$where": "sleep(1000)"},
        {**patient, "name": [{"family.x": "a"}]},
        {**patient, "identifier": [{"system": "urn:x", "value": {"$gt": ""}}]},
        {**patient, "meta": {"$set": {"versionId": "9"}}},
    ):
        response = mode_client.put(f"/fhir/Patient/{patient['id']}", json=body)
        assert response.status_code == 400, response.get_data(as_text=True)
    inert = {**patient, "name": [{"use": "official", "family": "$where", "given": ['{"$gt": ""}']}]}
    stored = mode_client.put(f"/fhir/Patient/{patient['id']}", json=inert)
    assert stored.status_code == 200, stored.get_data(as_text=True)
    found = mode_client.get("/fhir/Patient?family=$where&_total=accurate").get_json()
    assert found["total"] == 1 and found["entry"][0]["resource"]["name"][0]["given"] == ['{"$gt": ""}']
    assert mode_client.get("/fhir/Patient?family=$wherex&_total=accurate").get_json()["total"] == 0
    for cursor in ({"d": "n", "k": [{"$gt": ""}, "x"]}, {"d": "n", "k": "x"}, ["n"], {"ts": {"$gt": ""}, "key": 1}):
        token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
        for url in (f"/fhir/Patient?_cursor={token}", f"/fhir/Patient/_history?_cursor={token}"):
            response = mode_client.get(url)
            assert response.status_code == 400 and response.get_json()["issue"][0]["expression"] == ["_cursor"]


def test_a_patient_sent_by_b_with_a_s_nir_leaves_a_s_patient_unchanged(secured):
    """B's Patient with A's NIR is B's own: A's stored documents are untouched."""
    a = secured.client_session(LAB_A)
    b = secured.client_session(LAB_B)
    post_result(a, LAB_A, 1)
    before = owned_documents(secured.store.db, LAB_A.finess)
    bundle_b = generate_result_bundle(random.Random(3), LAB_B, include_legal_entity=False)
    bundle_a = generate_result_bundle(random.Random(1), LAB_A, include_legal_entity=False)
    patient_b = next(e for e in bundle_b["entry"] if e["resource"]["resourceType"] == "Patient")
    patient_a = next(e for e in bundle_a["entry"] if e["resource"]["resourceType"] == "Patient")
    patient_b["resource"]["identifier"] = patient_a["resource"]["identifier"]
    patient_b["request"] = patient_a["request"]
    assert b.post("", json=bundle_b).status_code in (200, 403)
    assert owned_documents(secured.store.db, LAB_A.finess) == before
