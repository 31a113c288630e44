"""Which certificates a result gives, read from FHIR resources, and the errors when it can't."""

from __future__ import annotations

import datetime as dt

import pytest

from fhir_server.outcome import FhirError
from operations.certificates.examples import example_resources
from operations.certificates.facts import facts_from_resources
from operations.certificates.generate import issue_certificates
from operations.certificates.hcert import decode_and_verify
from operations.certificates.keys import load_keyring
from operations.certificates.trustlist import trust_list
from operations.certificates.uvci import has_valid_check_character

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def keyring(tmp_path):
    return load_keyring(tmp_path / "var", environ={})


def issue(keyring, now=NOW, **options):
    resources = example_resources(**options)
    return issue_certificates(facts_from_resources(**resources), keyring, now)


def verified_payloads(keyring, certificates):
    published = trust_list(keyring)
    return [decode_and_verify(d.hc1, published, now=certificates.generated_at).payload for d in certificates.dccs]


def test_facts_from_fhir_resources():
    sampled = dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.UTC)
    resources = example_resources(kind="antigen", sampled_at=sampled, version="3")
    facts = facts_from_resources(**resources)
    assert (facts.family_name, facts.given_names, facts.birth_date) == (
        "Lefèvre-Dubois",
        "Françoise-Hélène",
        "1985-03-07",
    )
    assert (facts.test_kind, facts.loinc, facts.result) == ("antigen", "94558-4", "not-detected")
    assert facts.sampled_at == sampled and facts.device_id == "1232"
    assert facts.lab_finess == resources["organization"]["identifier"][0]["value"]
    assert facts.version_key == ("DiagnosticReport/dr-example/_history/3|Observation/dr-example-obs/_history/3")


def test_birth_list_given_names_extension_wins():
    resources = example_resources(given=("Jean",))
    resources["patient"]["name"][0]["extension"] = [
        {
            "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-birth-list-given-name",
            "valueString": "Jean Paul  Marie",
        }
    ]
    assert facts_from_resources(**resources).given_names == "Jean Paul Marie"


def test_pcr_negative_gives_a_test_certificate(keyring):
    certificates = issue(keyring, kind="naat", result="not-detected", sampled_at=NOW - dt.timedelta(hours=10))
    [payload] = verified_payloads(keyring, certificates)
    entry = payload["t"][0]
    assert entry["tt"] == "LP6464-4" and entry["tr"] == "260415000" and "ma" not in entry
    assert entry["tg"] == "840539006" and entry["co"] == "FR"
    assert entry["sc"] == (NOW - dt.timedelta(hours=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert entry["tc"] == "Laboratoire Synthétique du Parc"
    assert has_valid_check_character(entry["ci"])
    assert [d.type for d in certificates.dccs] == ["test"]


def test_antigen_negative_gives_a_rat_certificate_with_device(keyring):
    certificates = issue(keyring, kind="antigen", sampled_at=NOW - dt.timedelta(hours=2))
    [payload] = verified_payloads(keyring, certificates)
    assert payload["t"][0]["tt"] == "LP217198-3" and payload["t"][0]["ma"] == "1232"


def test_antigen_without_device_is_refused_with_an_outcome(keyring):
    with pytest.raises(FhirError) as error:
        issue(keyring, kind="antigen", device=None, sampled_at=NOW - dt.timedelta(hours=2))
    assert error.value.status == 422
    assert error.value.issues[0].expression == ["Observation.device"]
    assert error.value.issues[0].fr


def test_antigen_with_device_outside_eu_list_is_refused(keyring):
    with pytest.raises(FhirError) as error:
        issue(keyring, kind="antigen", device="99999", sampled_at=NOW - dt.timedelta(hours=2))
    assert error.value.status == 422
    assert "Observation.device" in error.value.issues[0].expression


def test_recent_positive_gives_only_a_test_certificate(keyring):
    certificates = issue(keyring, result="detected", sampled_at=NOW - dt.timedelta(days=5))
    assert [d.type for d in certificates.dccs] == ["test"]
    assert certificates.dccs[0].payload["t"][0]["tr"] == "260373001"


def test_positive_after_eleven_days_adds_a_recovery_certificate(keyring):
    sampled = NOW - dt.timedelta(days=20)
    certificates = issue(keyring, result="detected", sampled_at=sampled)
    assert [d.type for d in certificates.dccs] == ["test", "recovery"]
    test_payload, recovery_payload = verified_payloads(keyring, certificates)
    recovery = recovery_payload["r"][0]
    day = sampled.date()
    assert recovery["fr"] == day.isoformat()
    assert recovery["df"] == (day + dt.timedelta(days=11)).isoformat()
    assert recovery["du"] == (day + dt.timedelta(days=180)).isoformat()
    assert recovery["ci"] != test_payload["t"][0]["ci"]
    assert has_valid_check_character(recovery["ci"])


def test_serology_gives_result_sheet_only(keyring):
    certificates = issue(keyring, kind="serology", result="detected", sampled_at=NOW - dt.timedelta(days=2))
    assert certificates.dccs == ()


def test_inconclusive_gives_result_sheet_only(keyring):
    certificates = issue(keyring, result="inconclusive", sampled_at=NOW - dt.timedelta(days=1))
    assert certificates.dccs == ()


def test_result_older_than_three_months_is_gone(keyring):
    with pytest.raises(FhirError) as error:
        issue(keyring, sampled_at=NOW - dt.timedelta(days=93))
    assert error.value.status == 410
    assert error.value.issues[0].expression == ["Specimen.collection.collectedDateTime"]


@pytest.mark.parametrize("status", ["preliminary", "registered", "partial"])
def test_result_not_final_is_a_conflict(keyring, status):
    with pytest.raises(FhirError) as error:
        issue(keyring, status=status, sampled_at=NOW - dt.timedelta(hours=5))
    assert error.value.status == 409
    assert error.value.issues[0].expression == ["DiagnosticReport.status"]
    assert "définitif" in error.value.issues[0].fr


def test_corrected_result_is_accepted(keyring):
    assert issue(keyring, status="corrected", sampled_at=NOW - dt.timedelta(hours=5)).dccs


@pytest.mark.parametrize(
    "family, given, fnt, gnt",
    [
        ("Lefèvre-Dubois", ("Françoise-Hélène",), "LEFEVRE<DUBOIS", "FRANCOISE<HELENE"),
        ("N'Diaye", ("Aïssatou",), "NDIAYE", "AISSATOU"),
        ("Œuvray", ("Gaëlle", "Marie"), "OEUVRAY", "GAELLE<MARIE"),
    ],
)
def test_names_with_accents_hyphens_apostrophes(keyring, family, given, fnt, gnt):
    certificates = issue(keyring, family=family, given=given, sampled_at=NOW - dt.timedelta(hours=5))
    [payload] = verified_payloads(keyring, certificates)
    assert payload["nam"] == {"fn": family, "fnt": fnt, "gn": " ".join(given), "gnt": gnt}


def test_partial_birth_date_is_kept(keyring):
    certificates = issue(keyring, birth_date="1962-05", sampled_at=NOW - dt.timedelta(hours=5))
    assert verified_payloads(keyring, certificates)[0]["dob"] == "1962-05"


def test_birth_date_outside_dcc_range_gives_a_clear_outcome(keyring):
    with pytest.raises(FhirError) as error:
        issue(keyring, birth_date="1890-01-01", sampled_at=NOW - dt.timedelta(hours=5))
    assert error.value.status == 422
    assert error.value.issues[0].expression == ["Patient.birthDate"]


def test_non_latin_name_gives_a_clear_outcome(keyring):
    with pytest.raises(FhirError) as error:
        issue(keyring, family="ناصر", sampled_at=NOW - dt.timedelta(hours=5))
    assert error.value.status == 422 and error.value.issues[0].expression == ["Patient.name"]


def test_uvci_stable_for_same_version_and_new_for_a_new_version(keyring):
    sampled = NOW - dt.timedelta(hours=5)
    first = issue(keyring, sampled_at=sampled, version="2").dccs[0]
    again = issue(
        keyring, sampled_at=sampled, version="2", now=NOW + dt.timedelta(minutes=3), family="Lefèvre-Dubois-Corrigé"
    ).dccs[0]
    corrected = issue(keyring, sampled_at=sampled, version="3").dccs[0]
    assert first.uvci == again.uvci
    assert again.payload["nam"]["fn"] == "Lefèvre-Dubois-Corrigé"  # made from current data
    assert corrected.uvci != first.uvci


def test_sampling_date_without_time_is_refused(keyring):
    resources = example_resources()
    resources["specimen"]["collection"]["collectedDateTime"] = "2026-11-01"
    with pytest.raises(FhirError) as error:
        facts_from_resources(**resources)
    assert error.value.status == 422
    assert error.value.issues[0].expression == ["Specimen.collection.collectedDateTime"]


def test_unknown_loinc_is_refused():
    resources = example_resources()
    resources["observation"]["code"]["coding"][0]["code"] = "2345-7"
    with pytest.raises(FhirError) as error:
        facts_from_resources(**resources)
    assert error.value.status == 422 and error.value.issues[0].expression == ["Observation.code"]
