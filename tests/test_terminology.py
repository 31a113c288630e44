"""Terminology: code lists as data, the in-memory service, and the $lookup/$validate-code/$expand operations."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_server.outcome import FhirError
from operations.registry import OperationCall
from terminology import loader
from terminology.service import TerminologyService, UnknownValueSet, get_service

LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"
TESTS_VS = "https://sidep.example.fr/fhir/ValueSet/sars-cov-2-tests"
RESULTS_VS = "https://sidep.example.fr/fhir/ValueSet/sars-cov-2-results"
REPO = Path(__file__).resolve().parents[1]


def call(name, level, resource_type, parameters, resource_id=None, lang="en"):
    return OperationCall(
        name, level, resource_type, resource_id, {k: [v] for k, v in parameters.items()}, None, None, None, lang
    )


def test_loinc_subset_is_complete_and_licensed():
    cs = json.loads((loader.DATA_DIR / "loinc-sars-cov-2.json").read_text(encoding="utf-8"))
    assert cs["url"] == LOINC and cs["content"] == "fragment"
    assert "This material contains content from LOINC (http://loinc.org)" in cs["copyright"]
    assert "http://loinc.org/license" in cs["copyright"]
    assert len(cs["concept"]) >= 25
    kinds = set()
    for concept in cs["concept"]:
        props = {p["code"]: p["valueCode"] for p in concept["property"]}
        kinds.add(props["kind"])
        assert concept["display"] and concept["designation"][0]["language"] == "fr"
    assert kinds == {"naat", "antigen", "serology"}


def test_all_resources_are_codesystems_and_valuesets_with_consistent_urls():
    resources = get_service().all_resources()
    ids = [(r["resourceType"], r["id"]) for r in resources]
    assert len(ids) == len(set(ids))
    value_sets = [r for r in resources if r["resourceType"] == "ValueSet"]
    assert {r["resourceType"] for r in resources} == {"CodeSystem", "ValueSet"}
    ours = [vs for vs in value_sets if vs["url"].startswith(loader.BASE_URL)]
    assert all(vs["url"] == f"{loader.BASE_URL}/ValueSet/{vs['id']}" for vs in ours)
    urls = {vs["url"] for vs in value_sets}
    assert {
        TESTS_VS,
        RESULTS_VS,
        f"{loader.BASE_URL}/ValueSet/specimen-types",
        f"{loader.BASE_URL}/ValueSet/dcc-covid-19-lab-result",
        f"{loader.BASE_URL}/ValueSet/dcc-covid-19-lab-test-manufacturer-and-name",
        "http://hl7.org/fhir/ValueSet/administrative-gender",
    } <= urls


def test_resources_parse_as_fhir():
    from profiles.base_validation import parse_errors

    for resource in get_service().all_resources():
        assert parse_errors(resource["resourceType"], resource) == [], resource["url"]


def test_lookup_in_both_languages():
    service = get_service()
    en = service.lookup(LOINC, "94558-4", "en")
    assert en["display"].startswith("SARS-CoV-2 (COVID-19) Ag [Presence]")
    assert en["properties"]["kind"] == "antigen" and en["properties"]["dccTestType"] == "LP217198-3"
    assert service.lookup(LOINC, "94558-4", "fr")["display"].startswith("Test antigénique rapide")
    assert service.lookup(SNOMED, "260415000", "fr")["display"] == "Non détecté"
    assert service.lookup(SNOMED, "258500001")["display"] == "Nasopharyngeal swab"
    assert service.lookup(LOINC, "LP6464-4")["display"].startswith("Nucleic acid amplification")  # from DCC
    assert service.lookup(LOINC, "0000-0") is None


def test_validate_code():
    service = get_service()
    assert service.validate_code(RESULTS_VS, SNOMED, "260373001")["result"] is True
    assert service.validate_code(RESULTS_VS, SNOMED, "260373001", display="Détecté")["result"] is True
    wrong_display = service.validate_code(RESULTS_VS, SNOMED, "260373001", display="Positive")
    assert wrong_display["result"] is False and "Positive" in wrong_display["message"]
    unknown = service.validate_code(TESTS_VS, LOINC, "1234-5")
    assert unknown["result"] is False and "1234-5" in unknown["message"] and "1234-5" in unknown["message_fr"]
    assert service.validate_code(TESTS_VS, SNOMED, "94500-6")["result"] is False  # right code, wrong system
    assert service.validate_code(TESTS_VS, None, "94500-6")["result"] is True
    with pytest.raises(UnknownValueSet):
        service.validate_code("https://nowhere/vs", LOINC, "94500-6")


def test_filtered_value_sets_follow_the_kind_property():
    service = get_service()
    naat = {c.code for c in service.members(f"{loader.BASE_URL}/ValueSet/sars-cov-2-naat-tests")}
    antigen = {c.code for c in service.members(f"{loader.BASE_URL}/ValueSet/sars-cov-2-antigen-tests")}
    serology = {c.code for c in service.members(f"{loader.BASE_URL}/ValueSet/sars-cov-2-serology-tests")}
    assert "94500-6" in naat and "94558-4" in antigen and "94505-5" in serology
    assert "94564-2" in serology and "94564-2" not in antigen  # IgM serology, not an antigen test
    everything = {c.code for c in service.members(TESTS_VS)}
    assert everything == naat | antigen | serology
    assert "LP6464-4" not in everything  # DCC part codes are LOINC but not test codes


def test_expand_with_filter_count_offset():
    service = get_service()
    full = service.expand(TESTS_VS)
    assert full["expansion"]["total"] == len(full["expansion"]["contains"]) >= 25
    assert "compose" not in full
    sero = service.expand(TESTS_VS, filter="sérologie")
    assert sero["expansion"]["total"] >= 8
    assert service.expand(TESTS_VS, filter="serologie")["expansion"]["total"] == sero["expansion"]["total"]
    assert service.expand(TESTS_VS, filter="saliva")["expansion"]["contains"][0]["code"] == "94845-5"
    page = service.expand(TESTS_VS, count=5, offset=10)
    assert len(page["expansion"]["contains"]) == 5 and page["expansion"]["offset"] == 10
    assert page["expansion"]["contains"][0]["code"] == full["expansion"]["contains"][10]["code"]
    fr = service.expand(RESULTS_VS, filter="détecté", lang="fr")
    assert {c["display"] for c in fr["expansion"]["contains"]} == {"Détecté", "Non détecté"}


def test_reload_swaps_in_edited_code_lists(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(loader.DATA_DIR, data)
    service = TerminologyService(data_dir=data)
    assert service.lookup(LOINC, "99999-9") is None
    path = data / "loinc-sars-cov-2.json"
    cs = json.loads(path.read_text(encoding="utf-8"))
    cs["concept"].append(
        {"code": "99999-9", "display": "Test code", "property": [{"code": "kind", "valueCode": "naat"}]}
    )
    path.write_text(json.dumps(cs), encoding="utf-8")
    summary = service.reload()
    assert summary["codeSystems"][LOINC] == cs_count(service)
    assert service.validate_code(TESTS_VS, LOINC, "99999-9")["result"] is True


def cs_count(service):
    return len([c for c in service.members(TESTS_VS)]) + 2  # + the two DCC LOINC part codes, which are not tests


def test_reload_command_prints_what_was_loaded():
    out = subprocess.run(
        [sys.executable, "-m", "terminology", "reload"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "http://loinc.org: 31 concepts" in out
    assert f"{TESTS_VS}: 29 codes" in out


# --- operations ------------------------------------------------------------------------------------


def test_lookup_operation():
    from operations.lookup import lookup

    result = lookup(
        call("lookup", "type", "CodeSystem", {"system": LOINC, "code": "94309-2", "displayLanguage": "fr-FR"})
    )
    params = {p["name"]: p for p in result["parameter"] if "part" not in p}
    assert result["resourceType"] == "Parameters"
    assert params["display"]["valueString"].startswith("ARN SARS-CoV-2")
    props = {p["part"][0]["valueCode"]: p["part"][1] for p in result["parameter"] if p["name"] == "property"}
    assert props["kind"] == {"name": "value", "valueCode": "naat"}
    coding = lookup(
        OperationCall(
            "lookup",
            "type",
            "CodeSystem",
            None,
            {"coding": [{"system": SNOMED, "code": "119364003"}]},
            None,
            None,
            None,
            "fr",
        )
    )
    assert next(p for p in coding["parameter"] if p["name"] == "display")["valueString"] == "Sérum"
    with pytest.raises(FhirError) as missing:
        lookup(call("lookup", "type", "CodeSystem", {"system": LOINC, "code": "0000-0"}))
    assert missing.value.status == 404
    with pytest.raises(FhirError) as bad:
        lookup(call("lookup", "type", "CodeSystem", {"code": "94309-2"}))
    assert bad.value.status == 400


def test_validate_code_operation_type_and_instance():
    from operations.validate_code import validate_code

    ok = validate_code(
        call("validate-code", "type", "ValueSet", {"url": RESULTS_VS, "system": SNOMED, "code": "419984006"})
    )
    assert ok["parameter"][0] == {"name": "result", "valueBoolean": True}
    no = validate_code(
        call(
            "validate-code",
            "instance",
            "ValueSet",
            {"system": LOINC, "code": "1234-5"},
            resource_id="sars-cov-2-tests",
            lang="fr",
        )
    )
    assert no["parameter"][0]["valueBoolean"] is False
    assert "n'appartient pas" in next(p for p in no["parameter"] if p["name"] == "message")["valueString"]
    concept = OperationCall(
        "validate-code",
        "type",
        "ValueSet",
        None,
        {
            "url": [TESTS_VS],
            "codeableConcept": [
                {"coding": [{"system": "http://example.org", "code": "x"}, {"system": LOINC, "code": "94762-2"}]}
            ],
        },
        None,
        None,
        None,
        "en",
    )
    assert validate_code(concept)["parameter"][0]["valueBoolean"] is True
    with pytest.raises(FhirError) as unknown:
        validate_code(call("validate-code", "type", "ValueSet", {"url": "https://nowhere/vs", "code": "x"}))
    assert unknown.value.status == 404


def test_expand_operation():
    from operations.expand import expand

    result = expand(call("expand", "type", "ValueSet", {"url": TESTS_VS, "filter": "antig", "count": "2"}))
    assert result["resourceType"] == "ValueSet" and result["expansion"]["total"] == 4
    assert len(result["expansion"]["contains"]) == 2
    by_id = expand(call("expand", "instance", "ValueSet", {}, resource_id="specimen-types", lang="fr"))
    assert any(c["display"] == "Écouvillon nasopharyngé" for c in by_id["expansion"]["contains"])
    with pytest.raises(FhirError):
        expand(call("expand", "type", "ValueSet", {"url": TESTS_VS, "count": "-1"}))


def test_operations_are_registered():
    import operations
    import operations.expand  # noqa: F401  (only ours: other modules are tested by their authors)
    import operations.lookup  # noqa: F401
    import operations.validate  # noqa: F401
    import operations.validate_code  # noqa: F401

    assert operations.find("lookup", "type", "CodeSystem")
    assert operations.find("validate-code", "instance", "ValueSet")
    assert operations.find("expand", "type", "ValueSet")
    assert operations.find("validate", "instance", "Observation")
    assert operations.find("validate", "type", "Patient")
