"""Search results: _count, _sort, _include/_revinclude, _summary, _total, _elements, Bundle links
and keyset paging under concurrent writes, POST _search, errors and unknown parameters, deleted and
updated resources."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server import create_app
from tests.conftest import FhirClient
from tests.test_search_params import LOINC, PCR, issue_expressions, lab_result, matches, organization, patient, search

SUBSETTED = "SUBSETTED"


def links(bundle: dict) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle.get("link", [])}


def follow(client, url: str) -> dict:
    """Follow a Bundle link (an absolute URL of this server)."""
    parts = urlsplit(url)
    assert parts.netloc == "testserver" and parts.path.startswith("/fhir/"), url
    response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def outcomes(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]


def observation(client, when: str, status="final", **extra) -> dict:
    return client.create(
        {
            "resourceType": "Observation",
            "status": status,
            "effectiveDateTime": when,
            "code": {"coding": [{"system": LOINC, "code": PCR}]},
            **extra,
        }
    )


# -- _count ---------------------------------------------------------------------------------------
def test_count_limits_the_page_and_links_the_next(client):
    made = [patient(client, f"Nom{i}")["id"] for i in range(5)]
    bundle = search(client, "Patient", [("_count", "2")])
    assert matches(bundle) == made[:2]  # default order: creation order (time-ordered ids)
    assert "next" in links(bundle) and "previous" not in links(bundle)
    assert "total" not in bundle or bundle["total"] == 5
    assert dict(parse_qsl(urlsplit(links(bundle)["self"]).query))["_count"] == "2"
    assert matches(search(client, "Patient", [("_count", "5")])) == made
    assert "next" not in links(search(client, "Patient", [("_count", "5")]))
    zero = search(client, "Patient", [("_count", "0")])
    assert matches(zero) == [] and zero["total"] == 5


def test_count_is_capped_by_max_page_size_with_a_warning(settings):
    client = FhirClient(create_app(settings.but(max_page_size=3)).test_client())
    made = [patient(client, f"Nom{i}")["id"] for i in range(5)]
    bundle = search(client, "Patient", [("_count", "1000")])
    assert matches(bundle) == made[:3]
    [outcome] = outcomes(bundle)
    assert outcome["issue"][0]["severity"] == "warning"
    assert "_count" in issue_expressions(outcome)
    # the links carry the page size actually used
    next_url = links(bundle)["next"]
    assert dict(parse_qsl(urlsplit(next_url).query))["_count"] == "3"
    page2 = follow(client, next_url)
    assert matches(page2) == made[3:]
    assert outcomes(page2) == []


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", ""])
def test_bad_count_is_400(client, value):
    body = search(client, "Patient", [("_count", value)], status=400)
    assert body["resourceType"] == "OperationOutcome" and "_count" in issue_expressions(body)


# -- _sort ----------------------------------------------------------------------------------------
def test_sort_several_keys_and_descending(client):
    b2 = patient(client, "Bernard", ("Zoé",), birthDate="1990-01-01")["id"]
    a1 = patient(client, "André", ("Luc",), birthDate="1980-05-05")["id"]
    b1 = patient(client, "bernard", ("Anne",), birthDate="2000-12-31")["id"]
    c1 = patient(client, "Céline", ("Marc",))["id"]
    assert matches(search(client, "Patient", [("_sort", "family,given")])) == [a1, b1, b2, c1]
    assert matches(search(client, "Patient", [("_sort", "family,-given")])) == [a1, b2, b1, c1]
    assert matches(search(client, "Patient", [("_sort", "-family,given")])) == [c1, b1, b2, a1]
    # a resource without the value sorts after the others when descending, before when ascending
    assert matches(search(client, "Patient", [("_sort", "-birthdate")])) == [b1, b2, a1, c1]
    assert matches(search(client, "Patient", [("_sort", "birthdate")])) == [c1, a1, b2, b1]
    assert matches(search(client, "Patient", [("_sort", "_id")])) == sorted([a1, b1, b2, c1])
    assert matches(search(client, "Patient", [("_sort", "-_id")])) == sorted([a1, b1, b2, c1], reverse=True)


def test_sort_by_last_updated(client):
    first = patient(client, "Un")["id"]
    second = patient(client, "Deux")["id"]
    third = patient(client, "Trois")["id"]
    client.put(f"/fhir/Patient/{first}", json={"resourceType": "Patient", "id": first, "name": [{"family": "Un bis"}]})
    assert matches(search(client, "Patient", [("_sort", "_lastUpdated")])) == [second, third, first]
    assert matches(search(client, "Patient", [("_sort", "-_lastUpdated")])) == [first, third, second]


@pytest.mark.parametrize("key", ["nosuchparam", "-nosuchparam", "phone:exact"])
def test_bad_sort_key_is_400(client, key):
    body = search(client, "Patient", [("_sort", key)], status=400)
    assert "_sort" in issue_expressions(body)


# -- _include / _revinclude -----------------------------------------------------------------------
def test_include_and_revinclude(client):
    alice, bob = patient(client, "Alice"), patient(client, "Bob")
    org = organization(client, "Laboratoire", "010000024")
    a = lab_result(client, alice["id"], org["id"], "D-1", "2021-03-04T10:00:00Z", True)
    b = lab_result(client, bob["id"], org["id"], "D-2", "2021-03-05T10:00:00Z", False)

    bundle = search(client, "Observation", [("_include", "Observation:patient"), ("_sort", "date")])
    assert matches(bundle) == [a["obs"]["id"], b["obs"]["id"]]
    included = [
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle["entry"]
        if e["search"]["mode"] == "include"
    ]
    assert sorted(included) == sorted([("Patient", alice["id"]), ("Patient", bob["id"])])
    assert all(e["fullUrl"].startswith("http://testserver/fhir/") for e in bundle["entry"])

    # a typed include, and an include shared by two matches appears once
    bundle = search(client, "Observation", [("_include", "Observation:performer:Organization")])
    assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"] == [org["id"]]
    bundle = search(client, "Observation", [("_include", "Observation:performer:Practitioner")])
    assert [e for e in bundle["entry"] if e["search"]["mode"] == "include"] == []

    bundle = search(
        client,
        "DiagnosticReport",
        [("patient", alice["id"]), ("_include", "DiagnosticReport:result"), ("_include", "DiagnosticReport:based-on")],
    )
    assert matches(bundle) == [a["dr"]["id"]]
    assert {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle["entry"]
        if e["search"]["mode"] == "include"
    } == {("Observation", a["obs"]["id"]), ("ServiceRequest", a["sr"]["id"])}

    bundle = search(
        client,
        "Patient",
        [("_id", alice["id"]), ("_revinclude", "Observation:patient"), ("_revinclude", "DiagnosticReport:subject")],
    )
    assert matches(bundle) == [alice["id"]]
    assert {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle["entry"]
        if e["search"]["mode"] == "include"
    } == {("Observation", a["obs"]["id"]), ("DiagnosticReport", a["dr"]["id"])}

    # a deleted target is not included
    assert client.delete(f"/fhir/Patient/{bob['id']}").status_code in (200, 204)
    bundle = search(client, "Observation", [("patient", bob["id"]), ("_include", "Observation:patient")])
    assert matches(bundle) == [b["obs"]["id"]]
    assert [e for e in bundle["entry"] if e["search"]["mode"] == "include"] == []


@pytest.mark.parametrize(
    "param,value",
    [
        ("_include", "Observation:code"),
        ("_include", "Patient:organization"),
        ("_include", "nonsense"),
        ("_revinclude", "Observation:nosuch"),
    ],
)
def test_bad_include_is_400(client, param, value):
    body = search(client, "Observation", [(param, value)], status=400)
    assert param in issue_expressions(body)


# -- _summary, _total, _elements ------------------------------------------------------------------
def test_summary_count_and_total(client):
    for i in range(4):
        observation(client, f"2021-03-0{i + 1}T10:00:00Z", status="final" if i < 3 else "amended")
    bundle = search(client, "Observation", [("_summary", "count")])
    assert bundle["total"] == 4 and "entry" not in bundle
    assert search(client, "Observation", [("_summary", "count"), ("status", "final")])["total"] == 3
    bundle = search(client, "Observation", [("_count", "1"), ("_total", "accurate"), ("status", "final")])
    assert bundle["total"] == 3 and len(matches(bundle)) == 1
    assert "total" not in search(client, "Observation", [("_total", "none")])
    # the total does not change while paging
    page2 = follow(client, links(bundle)["next"])
    assert page2["total"] == 3


@pytest.mark.parametrize("param,value", [("_summary", "everything"), ("_summary", "TRUE"), ("_total", "exact")])
def test_unknown_summary_or_total_mode_is_400(client, param, value):
    body = search(client, "Observation", [(param, value)], status=400)
    assert param in issue_expressions(body)


def _tags(resource):
    return [t.get("code") for t in resource.get("meta", {}).get("tag", [])]


def test_summary_modes_and_elements_mark_subsetted(client):
    p = patient(
        client,
        "Durand",
        ("Alice",),
        gender="female",
        birthDate="1990-03-04",
        maritalStatus={"text": "Célibataire"},
        text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Alice Durand</div>'},
    )
    full = search(client, "Patient", [("_id", p["id"])])["entry"][0]["resource"]
    assert SUBSETTED not in _tags(full) and "maritalStatus" in full

    summary = search(client, "Patient", [("_id", p["id"]), ("_summary", "true")])["entry"][0]["resource"]
    assert SUBSETTED in _tags(summary)
    assert summary["name"] == full["name"] and summary["birthDate"] == "1990-03-04"
    assert "maritalStatus" not in summary and "text" not in summary  # not summary elements

    text = search(client, "Patient", [("_id", p["id"]), ("_summary", "text")])["entry"][0]["resource"]
    assert SUBSETTED in _tags(text) and "text" in text and "name" not in text

    data = search(client, "Patient", [("_id", p["id"]), ("_summary", "data")])["entry"][0]["resource"]
    assert SUBSETTED in _tags(data) and "text" not in data and "maritalStatus" in data

    elements = search(client, "Patient", [("_id", p["id"]), ("_elements", "gender,birthDate")])["entry"][0]["resource"]
    assert SUBSETTED in _tags(elements)
    assert set(elements) == {"resourceType", "id", "meta", "gender", "birthDate"}

    obs = observation(client, "2021-03-04T10:00:00Z", valueString="positif")
    shaped = search(client, "Observation", [("_elements", "valueString")])["entry"][0]["resource"]
    assert shaped["id"] == obs["id"] and shaped["valueString"] == "positif"
    assert {"status", "code"} <= set(shaped) and "effectiveDateTime" not in shaped  # mandatory kept


# -- links and keyset paging ----------------------------------------------------------------------
def _walk(client, first: dict, between=None) -> list[list[str]]:
    pages, bundle = [matches(first)], first
    while "next" in links(bundle):
        if between:
            between(len(pages))
        bundle = follow(client, links(bundle)["next"])
        pages.append(matches(bundle))
    return pages


def test_paging_while_resources_are_created(client):
    originals = [observation(client, "2021-03-04T10:00:00Z")["id"] for _ in range(7)]
    added: list[str] = []
    pages = _walk(
        client,
        search(client, "Observation", [("_count", "3")]),
        lambda n: added.append(observation(client, "2021-03-04T10:00:00Z")["id"]),
    )
    seen = [i for page in pages for i in page]
    assert len(seen) == len(set(seen)), "an entry was repeated"
    assert set(originals) <= set(seen), "an entry was skipped"
    assert set(seen) <= set(originals) | set(added)
    assert all(len(page) <= 3 for page in pages)


def test_paging_sorted_by_date_descending_while_resources_are_created(client):
    # two resources share each date, so the _id tie-breaker is exercised across page ends
    originals = {observation(client, f"2021-03-{d:02d}T10:00:00Z")["id"]: d for d in (1, 1, 2, 3, 3, 4, 5, 5, 6)}
    added: dict[str, int] = {}

    def insert(n):  # one before the cursor (already passed), one after (still to come)
        added[observation(client, "2021-03-09T10:00:00Z")["id"]] = 9
        added[observation(client, "2021-03-01T10:00:00Z")["id"]] = 1
        added[observation(client, "2021-03-05T10:00:00Z")["id"]] = 5

    pages = _walk(client, search(client, "Observation", [("_sort", "-date"), ("_count", "2")]), insert)
    seen = [i for page in pages for i in page]
    assert len(seen) == len(set(seen)), "an entry was repeated"
    assert set(originals) <= set(seen), "an entry was skipped"
    days = {**originals, **added}
    assert [days[i] for i in seen] == sorted((days[i] for i in seen), reverse=True)
    assert not any(days[i] == 9 for i in seen if i in added)  # inserted behind the cursor: not seen


def test_previous_link_returns_the_previous_page_exactly(client):
    for d in (3, 1, 2, 5, 4, 1, 6):
        observation(client, f"2021-03-{d:02d}T10:00:00Z")
    params = [("_sort", "date"), ("_count", "2"), ("status", "final")]
    pages = [search(client, "Observation", params)]
    while "next" in links(pages[-1]):
        pages.append(follow(client, links(pages[-1])["next"]))
    assert [len(matches(p)) for p in pages] == [2, 2, 2, 1]
    assert "previous" not in links(pages[0])
    for i in range(len(pages) - 1, 0, -1):
        previous = follow(client, links(pages[i])["previous"])
        assert matches(previous) == matches(pages[i - 1])
        # and from there, next leads back to the same page
        assert matches(follow(client, links(previous)["next"])) == matches(pages[i])
    # the first page reached backwards has no previous link
    assert "previous" not in links(follow(client, links(pages[1])["previous"]))
    # every link keeps the search parameters
    for page in pages:
        for url in links(page).values():
            query = dict(parse_qsl(urlsplit(url).query))
            assert query["_sort"] == "date" and query["status"] == "final" and query["_count"] == "2"


def test_self_link_describes_the_page(client):
    for i in range(3):
        patient(client, f"Nom{i}")
    first = search(client, "Patient", [("family", "nom"), ("_count", "2")])
    assert matches(follow(client, links(first)["self"])) == matches(first)
    second = follow(client, links(first)["next"])
    assert matches(follow(client, links(second)["self"])) == matches(second)


def test_bad_cursor_is_400(client):
    body = search(client, "Patient", [("_cursor", "not-a-cursor!")], status=400)
    assert "_cursor" in issue_expressions(body)


# -- POST _search ---------------------------------------------------------------------------------
def test_post_search_equals_get(client):
    alice, bob = patient(client, "Alice"), patient(client, "Bob")
    org = organization(client, "Laboratoire", "010000024")
    lab_result(client, alice["id"], org["id"], "D-1", "2021-03-04T10:00:00+02:00", True)
    lab_result(client, bob["id"], org["id"], "D-2", "2021-03-05T10:00:00Z", False)
    params = [
        ("date", "ge2021-03-04T00:00:00+01:00"),
        ("code", f"{LOINC}|{PCR}"),
        ("_sort", "-date"),
        ("_include", "Observation:patient"),
        ("_count", "1"),
    ]
    got = search(client, "Observation", params)
    from urllib.parse import urlencode

    response = client.http.post(
        "/fhir/Observation/_search",
        data=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/fhir+json"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    posted = response.get_json()
    assert [e["resource"]["id"] for e in posted["entry"]] == [e["resource"]["id"] for e in got["entry"]]
    assert links(posted) == links(got)
    # the next link of a POSTed search is a GET that continues it
    assert matches(follow(client, links(posted)["next"])) == matches(follow(client, links(got)["next"]))
    # parameters may be split between the URL and the body
    response = client.http.post(
        f"/fhir/Observation/_search?patient={bob['id']}",
        data="status=final",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/fhir+json"},
    )
    assert response.status_code == 200 and len(matches(response.get_json())) == 1


# -- unknown parameters, strict handling ----------------------------------------------------------
def test_unknown_parameter_is_ignored_with_a_warning_in_lenient_mode(client):
    made = {patient(client, "Alice")["id"], patient(client, "Bob")["id"]}
    bundle = search(client, "Patient", [("nosuchparam", "x"), ("family", "alice")])
    assert len(matches(bundle)) == 1
    [outcome] = outcomes(bundle)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "warning"
    assert "nosuchparam" in issue_expressions(outcome)
    # the ignored parameter is not echoed in the self link
    assert "nosuchparam" not in links(bundle)["self"]
    bundle = search(client, "Patient", [("nosuchparam", "x")], headers={"Prefer": "handling=lenient"})
    assert set(matches(bundle)) == made


def test_unknown_parameter_is_400_with_strict_handling(client):
    patient(client, "Alice")
    body = search(client, "Patient", [("nosuchparam", "x")], status=400, headers={"Prefer": "handling=strict"})
    assert body["resourceType"] == "OperationOutcome"
    assert "nosuchparam" in issue_expressions(body)
    # known parameters are fine in strict mode
    assert len(matches(search(client, "Patient", [("family", "alice")], headers={"Prefer": "handling=strict"}))) == 1


@pytest.mark.parametrize(
    "param,value",
    [
        ("gender:missing", "yes"),
        ("family:below", "x"),
        ("code:nosuch", "x"),
        ("subject:identifier", "x|1"),
        ("_id:exact", "x"),
    ],
)
def test_bad_modifier_or_value_is_400(client, param, value):
    rtype = "Observation" if param.split(":")[0] in ("code", "subject") else "Patient"
    body = search(client, rtype, [(param, value)], status=400)
    assert param in issue_expressions(body)


# -- deleted and updated resources ----------------------------------------------------------------
def test_deleted_resource_is_not_found(client):
    keep, gone = patient(client, "Garde"), patient(client, "Supprime", gender="male")
    assert client.delete(f"/fhir/Patient/{gone['id']}").status_code in (200, 204)
    assert matches(search(client, "Patient")) == [keep["id"]]
    assert matches(search(client, "Patient", [("_id", gone["id"])])) == []
    assert matches(search(client, "Patient", [("family", "supprime")])) == []
    assert matches(search(client, "Patient", [("gender:missing", "true")])) == [keep["id"]]
    assert matches(search(client, "Patient", [("gender:not", "male")])) == [keep["id"]]
    assert matches(search(client, "Patient", [("_lastUpdated", "gt2000")])) == [keep["id"]]
    assert search(client, "Patient", [("_summary", "count")])["total"] == 1
    assert matches(search(client, "Patient", [("_sort", "-_lastUpdated")])) == [keep["id"]]


def test_updated_resource_appears_once_with_its_new_version(client):
    p = patient(client, "Ancien", gender="male")
    other = patient(client, "Autre")
    response = client.put(
        f"/fhir/Patient/{p['id']}",
        json={"resourceType": "Patient", "id": p["id"], "name": [{"family": "Nouveau"}], "gender": "female"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = search(client, "Patient")
    assert sorted(matches(bundle)) == sorted([p["id"], other["id"]])
    entry = next(e for e in bundle["entry"] if e["resource"]["id"] == p["id"])
    assert entry["resource"]["meta"]["versionId"] == "2"
    assert entry["resource"]["name"][0]["family"] == "Nouveau"
    assert matches(search(client, "Patient", [("family", "ancien")])) == []
    assert matches(search(client, "Patient", [("gender", "male")])) == []
    assert matches(search(client, "Patient", [("family", "nouveau"), ("gender", "female")])) == [p["id"]]


@pytest.mark.parametrize("sort", ["date", "-date"])
def test_paging_over_resources_without_the_sort_value(client, sort):
    """Resources lacking the sort value sort first ascending and last descending; paging forward
    and back over them repeats and skips nothing."""
    dated = [observation(client, f"2021-03-0{d}T10:00:00Z")["id"] for d in (2, 1, 3, 1)]
    undated = [
        client.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})["id"] for _ in range(3)
    ]
    pages = [search(client, "Observation", [("_sort", sort), ("_count", "2")])]
    while "next" in links(pages[-1]):
        pages.append(follow(client, links(pages[-1])["next"]))
    seen = [i for page in pages for i in matches(page)]
    assert sorted(seen) == sorted(dated + undated) and len(seen) == 7
    nulls = seen[:3] if sort == "date" else seen[-3:]
    assert set(nulls) == set(undated)
    for i in range(len(pages) - 1, 0, -1):
        assert matches(follow(client, links(pages[i])["previous"])) == matches(pages[i - 1])
