"""Searches with the indexes created at start: every query shape still gives the right answer when
an index serves it (an index must never change a result). Which index serves which query is
tests/test_index_plan.py's (SecantusDB's explain() is no proof)."""

from __future__ import annotations

import pytest

from fhir_server import create_app
from tests.conftest import FhirClient
from tests.test_search_params import (
    ANTIGEN,
    INS,
    LOINC,
    PCR,
    found,
    lab_result,
    matches,
    organization,
    patient,
    search,
)


@pytest.fixture
def indexed(settings):
    app = create_app(settings.but(create_indexes=True))
    return app, FhirClient(app.test_client())


@pytest.fixture
def dataset(indexed):
    app, client = indexed
    alice = patient(client, "Lefèvre", ("Éloïse",), identifier=[{"system": INS, "value": "2900475123456"}])
    bob = patient(client, "Martin", ("Bob",), identifier=[{"system": INS, "value": "1850169123456"}])
    org = organization(client, "Laboratoire", "010000024")
    a = lab_result(client, alice["id"], org["id"], "D-1", "2021-03-04T10:00:00Z", True)
    b = lab_result(client, bob["id"], org["id"], "D-2", "2021-03-06T10:00:00Z", False, code=ANTIGEN)
    return app, client, {"alice": alice, "bob": bob, "org": org, "a": a, "b": b}


def test_results_served_by_indexes_are_right(dataset):
    """The same searches as the unindexed tests, with every index in place: string prefixes,
    :contains, :text, 'system|', :not, :missing, dates of every kind."""
    app, client, d = dataset
    a, b = d["a"], d["b"]
    assert found(client, "Patient", ("identifier", f"{INS}|2900475123456")) == {d["alice"]["id"]}
    assert found(client, "Patient", ("family", "lefevre")) == {d["alice"]["id"]}
    assert found(client, "Patient", ("name", "ÉLO")) == {d["alice"]["id"]}
    assert found(client, "Patient", ("family", "lef,mar")) == {d["alice"]["id"], d["bob"]["id"]}
    assert found(client, "Patient", ("family:contains", "fèv")) == {d["alice"]["id"]}
    assert found(client, "Patient", ("family:exact", "Martin")) == {d["bob"]["id"]}
    assert found(client, "Organization", ("name", "labo")) == {d["org"]["id"]}
    assert found(client, "Observation", ("code", f"{LOINC}|")) == {a["obs"]["id"], b["obs"]["id"]}
    assert found(client, "Observation", ("code:text", "recherche sars")) == {a["obs"]["id"], b["obs"]["id"]}
    assert found(client, "Observation", ("code:not", PCR)) == {b["obs"]["id"]}
    assert found(client, "Observation", ("code", PCR), ("patient", d["alice"]["id"])) == {a["obs"]["id"]}
    assert found(client, "Observation", ("code", PCR), ("patient", d["bob"]["id"])) == set()
    assert found(client, "Observation", ("date", "2021-03-04")) == {a["obs"]["id"]}
    assert found(client, "Observation", ("date", "ge2021-03-05")) == {b["obs"]["id"]}
    assert found(client, "Observation", ("date", "le2021-03-05")) == {a["obs"]["id"]}
    assert found(client, "Observation", ("date", "ge2021-03-01"), ("date", "lt2021-03-05")) == {a["obs"]["id"]}
    assert found(client, "Observation", ("date", "2021-03-04,2021-03-06")) == {a["obs"]["id"], b["obs"]["id"]}
    assert found(client, "Observation", ("specimen:missing", "true")) == set()
    assert found(client, "DiagnosticReport", ("subject.identifier", f"{INS}|1850169123456")) == {b["dr"]["id"]}
    assert found(client, "Patient", ("_has:Observation:patient:code", ANTIGEN)) == {d["bob"]["id"]}
    assert found(client, "Patient", ("_id", d["bob"]["id"])) == {d["bob"]["id"]}
    # a deleted resource stays out of an index-served search
    assert client.delete(f"/fhir/Observation/{b['obs']['id']}").status_code in (200, 204)
    assert found(client, "Observation", ("code", ANTIGEN)) == set()
    assert found(client, "Observation", ("code:not", PCR)) == set()


def test_paging_with_indexes(dataset):
    app, client, d = dataset
    for day in (1, 2, 3):
        lab_result(client, d["alice"]["id"], d["org"]["id"], f"D-1{day}", f"2021-03-0{day}T08:00:00Z", False)
    bundle = search(client, "Observation", [("patient", d["alice"]["id"]), ("_sort", "-date"), ("_count", "2")])
    seen = matches(bundle)
    while any(link["relation"] == "next" for link in bundle["link"]):
        url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
        bundle = client.get(url.replace("http://testserver", "")).get_json()
        seen += matches(bundle)
    assert len(seen) == 4 == len(set(seen))
    dates = [client.get(f"/fhir/Observation/{i}").get_json()["effectiveDateTime"] for i in seen]
    assert dates == sorted(dates, reverse=True)
