"""The synthetic data generator: valid FHIR R4, conforming to the SI-DEP profiles, realistic mixes."""

import json
import random
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from stdnum import luhn

from fhir_server.synthetic import (
    default_laboratories,
    generate_bundles,
    generate_result_bundle,
    make_laboratories,
    make_nir,
    make_person,
    resend_bundle,
)
from profiles import validators as v
from profiles.base_validation import parse_errors
from profiles.engine import validate_resource

NOW = datetime(2024, 6, 30, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundles():
    return list(generate_bundles(random.Random(42), 400, now=NOW))


def resources_of(bundle):
    return {
        e["resource"]["resourceType"] + ("-site" if "partOf" in e["resource"] else ""): e["resource"]
        for e in bundle["entry"]
    }


def test_bundles_parse_as_r4_and_conform_to_the_profiles(bundles):
    from fhir.resources.R4B import get_fhir_model_class

    for bundle in bundles[:50]:
        get_fhir_model_class("Bundle").model_validate(bundle)
    for bundle in bundles:
        for entry in bundle["entry"]:
            resource = entry["resource"]
            assert parse_errors(resource["resourceType"], resource, in_bundle=True) == []
            assert validate_resource(resource) == [], (resource, validate_resource(resource))


def test_bundle_shape_and_conditional_requests(bundles):
    bundle = bundles[0]
    assert bundle["type"] == "transaction"
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert Counter(types) == {
        "Organization": 2,
        "Patient": 1,
        "ServiceRequest": 1,
        "Specimen": 1,
        "Observation": 1,
        "DiagnosticReport": 1,
    }
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    assert all(u.startswith("urn:uuid:") for u in full_urls) and len(full_urls) == len(bundle["entry"])
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        if resource["resourceType"] == "Patient" and "identifier" not in resource:
            assert request == {"method": "POST", "url": "Patient"}
            continue
        assert request["method"] == "PUT"
        kind, query = request["url"].split("?identifier=")
        system, value = query.split("|")
        assert kind == resource["resourceType"]
        assert value in {i["value"] for i in resource["identifier"]}
    # references point at entries of the same bundle
    res = resources_of(bundle)
    for ref in (
        res["Observation"]["subject"]["reference"],
        res["Observation"]["performer"][0]["reference"],
        res["DiagnosticReport"]["result"][0]["reference"],
        res["Organization-site"]["partOf"]["reference"],
    ):
        assert ref in full_urls


def test_dossier_identifiers_are_scoped_to_the_lab(bundles):
    for bundle in bundles[:50]:
        res = resources_of(bundle)
        system = res["ServiceRequest"]["identifier"][0]["system"]
        legal = res["Organization"]["identifier"][0]["value"]
        assert system == v.DOSSIER_SYSTEM_PREFIX + legal
        dossier = res["ServiceRequest"]["identifier"][0]["value"]
        assert res["Observation"]["identifier"][0] == {
            "system": system,
            "value": f"{dossier}-{res['Observation']['code']['coding'][0]['code']}",
        }
        assert res["DiagnosticReport"]["identifier"][0]["value"] == dossier
    dossiers = [resources_of(b)["ServiceRequest"]["identifier"][0]["value"] for b in bundles]
    assert len(set(dossiers)) == len(dossiers)


def test_mixes_match_the_guide(bundles):
    patients = [resources_of(b)["Patient"] for b in bundles]
    no_contact = sum("telecom" not in p for p in patients) / len(patients)
    assert 0.05 < no_contact < 0.16  # the guide: ~10% without phone or e-mail
    results = Counter()
    kinds = Counter()
    from terminology.service import get_service

    for bundle in bundles:
        obs = resources_of(bundle)["Observation"]
        kinds[get_service().concept("http://loinc.org", obs["code"]["coding"][0]["code"]).properties["kind"]] += 1
        if "valueCodeableConcept" in obs:
            results[obs["valueCodeableConcept"]["coding"][0]["code"]] += 1
        else:
            results["quantity"] += 1
    assert set(kinds) == {"naat", "antigen", "serology"} and kinds["naat"] > kinds["antigen"] > kinds["serology"]
    assert 0.04 < results["260373001"] / len(bundles) < 0.18
    assert results["260415000"] > results["260373001"]


def test_identifiers_pass_the_validators(bundles):
    nirs = 0
    for bundle in bundles:
        res = resources_of(bundle)
        for ident in res["Patient"].get("identifier", []):
            assert v.IDENTIFIER_CHECKS[ident["system"]](ident["value"], "x") == []
            nirs += 1
        for org in (res["Organization"], res["Organization-site"]):
            assert v.check_finess(org["identifier"][0]["value"], "x") == []
        for tel in res["Patient"].get("telecom", []):
            check = v.check_phone if tel["system"] == "phone" else v.check_email
            assert check(tel["value"], "x") == [], tel
    assert nirs > len(bundles) * 0.7


def test_corsican_and_accented_identities():
    rng = random.Random(7)
    corsicans = [make_person(rng, NOW.date(), corsican=True) for _ in range(30)]
    assert all(p.ins is None or p.ins[5:7] in ("2A", "2B") for p in corsicans)
    assert any(p.ins and p.ins[5:7] == "2A" for p in corsicans) and any(p.ins and p.ins[5:7] == "2B" for p in corsicans)
    assert all(p.ins is None or v.is_valid_nir(p.ins) for p in corsicans)
    people = [make_person(rng, NOW.date()) for _ in range(300)]
    names = [n for p in people for n in [p.family, *p.given]]
    assert any("-" in n for n in names)
    assert any(any(ch in n for ch in "éèêëïîôöüçÉ") for n in names)
    assert make_nir(rng, "female", NOW.date().replace(year=1953, month=7), "2A004")[:7] == "253072A"


def test_times_fall_in_the_last_three_months(bundles):
    for bundle in bundles:
        res = resources_of(bundle)
        collected = datetime.fromisoformat(res["Specimen"]["collection"]["collectedDateTime"])
        issued = datetime.fromisoformat(res["DiagnosticReport"]["issued"])
        assert NOW - timedelta(days=91) <= collected <= NOW
        assert collected <= issued <= NOW


def test_laboratories_are_stable_and_valid():
    labs = make_laboratories(random.Random(3), 10)
    assert labs == make_laboratories(random.Random(3), 10)
    numbers = [lab.finess for lab in labs] + [s.finess for lab in labs for s in lab.sites]
    assert len(set(numbers)) == len(numbers) and all(luhn.is_valid(n) and len(n) == 9 for n in numbers)
    assert default_laboratories() == default_laboratories() and len(default_laboratories()) == 20


def test_deterministic_for_a_seed():
    first = list(generate_bundles(random.Random(11), 5, now=NOW))
    again = list(generate_bundles(random.Random(11), 5, now=NOW))
    other = list(generate_bundles(random.Random(12), 5, now=NOW))
    assert first == again and first != other


def test_old_finess_system_appears_and_normalises():
    from profiles.engine import normalise_resource

    bundle = generate_result_bundle(random.Random(1), now=NOW, old_finess_rate=1.0)
    org = resources_of(bundle)["Organization-site"]
    assert org["identifier"][0]["system"] == v.FINESS_OLD
    assert validate_resource(org) == []
    assert normalise_resource(org)["identifier"][0]["system"] == v.FINESS


@pytest.mark.parametrize("change", ["none", "contact", "identity", "result"])
def test_resends_keep_the_dossier_keys(change):
    rng = random.Random(5)
    original = generate_result_bundle(rng, now=NOW, kind="naat")
    resent = resend_bundle(rng, original, change)
    assert [e["request"] for e in resent["entry"]] == [e["request"] for e in original["entry"]]
    assert not {e["fullUrl"] for e in resent["entry"]} & {e["fullUrl"] for e in original["entry"]}
    before, after = resources_of(original), resources_of(resent)
    for resource in after.values():
        assert validate_resource(resource) == []
    if change == "none":
        assert after["Patient"] == before["Patient"]
    if change == "contact":
        assert after["Patient"]["telecom"] != before["Patient"].get("telecom")
        assert after["Patient"]["meta"]["tag"][0]["code"] == "XMAJ"
    if change == "identity":
        assert after["Patient"]["name"][0]["family"] != before["Patient"]["name"][0]["family"]
    if change == "result":
        assert after["Observation"]["valueCodeableConcept"] != before["Observation"]["valueCodeableConcept"]
        assert after["Observation"]["status"] == "corrected"
    full_urls = {e["fullUrl"] for e in resent["entry"]}
    assert after["Observation"]["subject"]["reference"] in full_urls


def test_command_line_prints_ndjson(tmp_path):
    out = tmp_path / "bundles.ndjson"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fhir_server.synthetic",
            "--count",
            "3",
            "--seed",
            "9",
            "--now",
            "2024-06-30T12:00:00+00:00",
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
    )
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(json.loads(line)["type"] == "transaction" for line in lines)
    stdout = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhir_server.synthetic",
            "--count",
            "3",
            "--seed",
            "9",
            "--now",
            "2024-06-30T12:00:00+00:00",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert stdout.splitlines() == lines
