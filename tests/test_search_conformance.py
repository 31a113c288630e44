"""Search as FHIR R4 defines it (search.html), where a conformance review found the server apart:
descending sorts on repeating elements, `:[type]` on reference parameters, `:text` and `:missing` on
text-only concepts, and the escapes of search values. Each runs with the SI-DEP profiles on and off
where the types allow it (Practitioner and Communication have no SI-DEP profile)."""

from __future__ import annotations

import pytest

from fhir_server import create_app
from fhir_server.context import plan_builder
from fhir_server.search.extract import sort_keys
from fhir_server.search.registry import declared_indexes
from fhir_server.storage.mongo import index_plan
from tests.conftest import FhirClient
from tests.test_search_params import found, issue_expressions, matches, search
from tests.test_search_results import follow, links


@pytest.fixture(params=["plain-r4", "sidep-profiles"])
def any_mode(request, settings):
    return FhirClient(create_app(settings.but(enforce_profiles=request.param == "sidep-profiles")).test_client())


def practitioner(client, *given: str, identifiers=()) -> str:
    resource = {"resourceType": "Practitioner", "name": [{"family": "Démo", "given": list(given)}]}
    if identifiers:  # FHIR JSON has no empty arrays
        resource["identifier"] = [{"system": "urn:example:rpps", "value": v} for v in identifiers]
    return client.create(resource)["id"]


def communication(client, **content) -> str:
    return client.create({"resourceType": "Communication", "status": "completed", **content})["id"]


def timed_observation(client, *events: str) -> str:
    timing = {"effectiveTiming": {"event": list(events)}} if len(events) > 1 else {"effectiveDateTime": events[0]}
    return client.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **timing})["id"]


# -- _sort on repeating elements: smallest value ascending, greatest descending ------------------
def test_descending_sort_on_a_repeating_string_uses_the_greatest_value(any_mode):
    many = practitioner(any_mode, "Anne", "Zoé")  # smallest 'anne', greatest 'zoe'
    one = practitioner(any_mode, "Marc")
    assert matches(search(any_mode, "Practitioner", [("_sort", "given")])) == [many, one]
    assert matches(search(any_mode, "Practitioner", [("_sort", "-given")])) == [many, one]


def test_descending_sort_on_a_repeating_token_uses_the_greatest_code(any_mode):
    many = practitioner(any_mode, "A", identifiers=("100", "900"))
    one = practitioner(any_mode, "B", identifiers=("500",))
    assert matches(search(any_mode, "Practitioner", [("_sort", "identifier")])) == [many, one]
    assert matches(search(any_mode, "Practitioner", [("_sort", "-identifier")])) == [many, one]


def test_descending_sort_on_a_repeating_reference_uses_the_greatest_key(any_mode):
    many = communication(any_mode, recipient=[{"reference": "Practitioner/a"}, {"reference": "Practitioner/z"}])
    one = communication(any_mode, recipient=[{"reference": "Practitioner/m"}])
    assert matches(search(any_mode, "Communication", [("_sort", "recipient")])) == [many, one]
    assert matches(search(any_mode, "Communication", [("_sort", "-recipient")])) == [many, one]


def test_descending_sort_on_repeating_dates_uses_the_latest(client):
    spread = timed_observation(client, "2021-03-01T10:00:00Z", "2021-03-10T10:00:00Z")
    middle = timed_observation(client, "2021-03-05T10:00:00Z")
    assert matches(search(client, "Observation", [("_sort", "date")])) == [spread, middle]
    assert matches(search(client, "Observation", [("_sort", "-date")])) == [spread, middle]


def test_descending_sort_on_a_period_uses_its_end(client):
    long = client.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "effectivePeriod": {"start": "2021-03-01", "end": "2021-03-20"},
        }
    )["id"]
    day = timed_observation(client, "2021-03-10")
    assert matches(search(client, "Observation", [("_sort", "date")])) == [long, day]
    assert matches(search(client, "Observation", [("_sort", "-date")])) == [long, day]


def test_keyset_paging_on_a_descending_repeating_sort_repeats_and_skips_nothing(client):
    latest = {
        timed_observation(client, f"2021-03-0{lo}T10:00:00Z", f"2021-03-{hi}T10:00:00Z"): hi
        for lo, hi in ((1, 11), (2, 15), (3, 12), (4, 15), (5, 19))
    }
    latest.update({timed_observation(client, f"2021-03-{day}T10:00:00Z"): day for day in (13, 17)})
    pages = [search(client, "Observation", [("_sort", "-date"), ("_count", "2")])]
    while "next" in links(pages[-1]):
        pages.append(follow(client, links(pages[-1])["next"]))
    seen = [i for page in pages for i in matches(page)]
    assert sorted(seen) == sorted(latest)
    assert [latest[i] for i in seen] == sorted(latest.values(), reverse=True)
    for i in range(len(pages) - 1, 0, -1):
        assert matches(follow(client, links(pages[i])["previous"])) == matches(pages[i - 1])


def test_sort_keys_of_numbers_and_quantities():
    assert sort_keys("number", [2.5, -1.0, 7.0]) == {"lo": -1.0, "hi": 7.0}
    assert sort_keys("quantity", [38.2]) == {"lo": 38.2, "hi": 38.2}
    assert sort_keys("token", ["b", "http://s|b", "a", "http://s|a"]) == {"lo": "a", "hi": "b"}


def test_newest_first_sorts_match_a_compound_index(app):
    """'A patient's results, newest first' sorts on the stored descending key that the compound
    index of parameters.json holds, in the same order, so keyset pages read the index in order."""
    with app.app_context():
        plan = plan_builder().build("DiagnosticReport", [("patient", "p1"), ("_sort", "-date")])
    declared = [index.keys for index in declared_indexes()["DiagnosticReport"]]
    assert (("s.patient", 1), *plan.sort) in declared
    index = next(
        keys
        for keys in index_plan(["DiagnosticReport"])["DiagnosticReport"]
        if keys[0][0] == "s.patient" and len(keys) == 3
    )
    assert index[1:] == plan.sort


# -- :[type] on reference parameters --------------------------------------------------------------
def test_type_modifier_accepts_a_target_type_this_server_does_not_host(client):
    group_sample = client.create({"resourceType": "Specimen", "subject": {"reference": "Group/123"}})["id"]
    client.create({"resourceType": "Specimen", "subject": {"reference": "Patient/123"}})
    assert found(client, "Specimen", ("subject:Group", "123")) == {group_sample}
    assert found(client, "Specimen", ("subject:Device", "123")) == set()
    assert found(client, "Specimen", ("subject:Group.name", "x")) == set()  # no Group here to chain to


def test_type_modifier_on_a_reference_to_any_type(any_mode):
    about = communication(any_mode, about=[{"reference": "Encounter/e1"}])
    assert found(any_mode, "Communication", ("about:Encounter", "e1")) == {about}
    assert found(any_mode, "Communication", ("about:Claim", "e1")) == set()


@pytest.mark.parametrize("name", ["subject:Practitioner", "subject:Nonsense", "subject:patient"])
def test_a_type_that_is_not_a_target_or_unknown_stays_400(client, name):
    body = search(client, "Specimen", [(name, "123")], status=400)
    assert name in issue_expressions(body)


def test_not_a_target_in_a_chain_stays_400(client):
    body = search(client, "Specimen", [("subject:Practitioner.name", "x")], status=400)
    assert "subject:Practitioner.name" in issue_expressions(body)


# -- :text and :missing on a CodeableConcept with only text ---------------------------------------
def test_text_only_concept_is_found_by_text_and_is_not_missing(any_mode):
    text_only = communication(any_mode, medium=[{"text": "Courrier postal"}])
    coded = communication(any_mode, medium=[{"coding": [{"system": "urn:example:medium", "code": "SMS"}]}])
    without = communication(any_mode)
    assert found(any_mode, "Communication", ("medium:text", "courrier")) == {text_only}
    assert found(any_mode, "Communication", ("medium:missing", "true")) == {without}
    assert found(any_mode, "Communication", ("medium:missing", "false")) == {text_only, coded}
    assert found(any_mode, "Communication", ("medium", "SMS")) == {coded}
    assert found(any_mode, "Communication", ("medium:not", "SMS")) == {text_only, without}


def test_text_only_observation_code(client):
    text_only = client.create({"resourceType": "Observation", "status": "final", "code": {"text": "Recherche SARS"}})
    assert found(client, "Observation", ("code:text", "recherche")) == {text_only["id"]}
    assert found(client, "Observation", ("code:missing", "true")) == set()
    assert found(client, "Observation", ("code:missing", "false")) == {text_only["id"]}
    assert matches(search(client, "Observation", [("_sort", "-code")])) == [text_only["id"]]


def test_text_only_concept_with_indexes(settings):
    indexed = FhirClient(create_app(settings.but(create_indexes=True)).test_client())
    text_only = communication(indexed, medium=[{"text": "Courrier"}])
    without = communication(indexed)
    assert found(indexed, "Communication", ("medium:missing", "false")) == {text_only}
    assert found(indexed, "Communication", ("medium:missing", "true")) == {without}
    assert found(indexed, "Communication", ("medium:text", "cour")) == {text_only}


# -- escapes: \, \| \$ \\ ---------------------------------------------------------------------------
def test_escaped_bar_is_part_of_a_token_not_the_system_separator(any_mode):
    barred = practitioner(any_mode, "A", identifiers=("a|b",))
    other = practitioner(any_mode, "B", identifiers=("b",))
    assert found(any_mode, "Practitioner", ("identifier", r"a\|b")) == {barred}
    assert found(any_mode, "Practitioner", ("identifier", r"urn:example:rpps|a\|b")) == {barred}
    assert found(any_mode, "Practitioner", ("identifier", "a|b")) == set()  # system "a", code "b"
    assert found(any_mode, "Practitioner", ("identifier", r"a\|b,b")) == {barred, other}


def test_escaped_backslash_dollar_and_comma_in_strings(any_mode):
    slash = practitioner(any_mode, "Anne\\Marie")
    dollar = practitioner(any_mode, "Jean$Luc")
    comma = practitioner(any_mode, "Paul,Henri")
    barred = practitioner(any_mode, "Léa|Rose")
    assert found(any_mode, "Practitioner", ("given:exact", r"Anne\\Marie")) == {slash}
    assert found(any_mode, "Practitioner", ("given:exact", r"Jean\$Luc")) == {dollar}
    assert found(any_mode, "Practitioner", ("given:exact", r"Paul\,Henri")) == {comma}
    assert found(any_mode, "Practitioner", ("given:exact", r"Léa\|Rose")) == {barred}
    assert found(any_mode, "Practitioner", ("given", r"anne\\m")) == {slash}
    # an escaped backslash before a comma: the comma still separates two values
    assert found(any_mode, "Practitioner", ("given", r"jean\$,paul\\,anne")) == {dollar, slash}


def test_escaped_backslash_before_a_bar_leaves_the_bar_a_separator(any_mode):
    ident = practitioner(any_mode, "A", identifiers=("x",))
    assert found(any_mode, "Practitioner", ("identifier", "urn:example:rpps|x")) == {ident}
    # 'urn:example:rpps\\|x' is the system 'urn:example:rpps\' and the code 'x'
    assert found(any_mode, "Practitioner", ("identifier", "urn:example:rpps\\\\|x")) == set()


# -- stored index fields of an earlier layout ------------------------------------------------------
def test_reindex_rewrites_the_index_fields_of_stored_resources(app, client, settings):
    """Resources stored before the sort keys became {lo, hi} (a scalar o.<code>) and tokens escaped
    their bars sort and match again once `python -m fhir_server reindex` has run."""
    import os
    import subprocess
    import sys
    from datetime import datetime

    spread = timed_observation(client, "2021-03-01T10:00:00Z", "2021-03-10T10:00:00Z")
    middle = timed_observation(client, "2021-03-05T10:00:00Z")
    barred = practitioner(client, "A", identifiers=("a|b",))
    db = app.extensions["sidep.store"].db
    db["Observation"].update_many({}, {"$set": {"o": {"date": datetime(2021, 3, 1)}}})
    db["Practitioner"].update_one({"_id": barred}, {"$set": {"s.identifier": ["a|b", "urn:example:rpps|a|b"]}})
    assert found(client, "Practitioner", ("identifier", r"a\|b")) == set()
    env = dict(
        os.environ, MONGODB_URI=settings.mongodb_uri, MONGODB_DB=settings.mongodb_db, FHIR_BASE_URL=settings.base_url
    )
    done = subprocess.run(
        [sys.executable, "-m", "fhir_server", "reindex"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Observation: 2 rewritten" in done.stdout and "Practitioner: 1 rewritten" in done.stdout
    assert matches(search(client, "Observation", [("_sort", "-date")])) == [spread, middle]
    assert found(client, "Practitioner", ("identifier", r"a\|b")) == {barred}
