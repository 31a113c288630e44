"""Pseudonyms of persons and the pseudonymised record of a result (fhir_server/pseudonyms.py)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import random
import stat
from datetime import UTC, date, datetime

import pytest

from fhir_server.auth.principal import Principal
from fhir_server.auth.scopes import parse
from fhir_server.pseudonyms import (
    RECORD_FIELDS,
    Keyring,
    PseudonymKeyError,
    across_rotation,
    age_class,
    departement_of,
    departement_of_insee,
    departement_of_postal_code,
    finess_of,
    fold,
    identity_traits,
    kind_of_test,
    load_keyring,
    parse_pseudonym,
    performer_type,
    pseudonym,
    read_keyring,
    record_of,
    result_of,
    sampling_date,
)
from fhir_server.settings import Settings
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories, make_person
from fhir_server.web.results import site_organization
from operations.generate_certificate import load_result_resources
from profiles.validators import INS_NIA, INS_NIR

KEY_1, KEY_2 = bytes(range(32)), bytes(range(100, 132))
RING = Keyring({1: KEY_1})
NIR = "185057800608436"
LABS = make_laboratories(random.Random(31), 3)


def patient(family="Dupont", given=("Céline",), birth="1985-05-12", gender="female", ins=None, system=INS_NIR):
    resource = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": family, "given": list(given)}],
        "gender": gender,
        "birthDate": birth,
    }
    if ins:
        resource["identifier"] = [{"system": system, "value": ins}]
    return resource


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


# --- pseudonyms ---------------------------------------------------------------------------------------


def test_the_same_ins_gives_the_same_pseudonym_whatever_the_traits():
    one = patient("Dupont", ["Céline"], ins=NIR)
    other = patient("DUPONT-MARTIN", ["Celine", "Marie"], birth="1985-05-13", ins=NIR[:5] + " " + NIR[5:])
    assert pseudonym(one, RING) == pseudonym(other, RING)
    assert pseudonym(one, RING) != pseudonym(patient(ins="285057800608412"), RING)


def test_the_nir_check_key_does_not_change_the_pseudonym():
    assert pseudonym(patient(ins=NIR), RING) == pseudonym(patient(ins=NIR[:13] + "99"), RING)


def test_a_nir_is_preferred_to_a_nia():
    both = patient(ins=NIR)
    both["identifier"].insert(0, {"system": INS_NIA, "value": "785057800608499"})
    assert pseudonym(both, RING) == pseudonym(patient(ins=NIR), RING)


@pytest.mark.parametrize(
    "first, second",
    [
        (patient(given=["Céline"]), patient(given=["Celine"])),
        (patient(given=["JEAN-PIERRE"], gender="male"), patient(given=["Jean Pierre"], gender="male")),
        (patient(given=["Jean-Pierre"], gender="male"), patient(given=["Jean", "Pierre"], gender="male")),
        (patient(family="D'Arc"), patient(family="DARC")),
        (patient(family="d’Arc"), patient(family="D ARC")),
        (patient(family="Œuvrard"), patient(family="OEUVRARD")),
        (patient(family="Müller-Lüdenscheidt"), patient(family="mullerludenscheidt")),
    ],
)
def test_traits_are_normalised_before_hashing(first, second):
    assert pseudonym(first, RING) == pseudonym(second, RING)
    assert parse_pseudonym(pseudonym(first, RING))[1] == "t"


@pytest.mark.parametrize(
    "changed",
    [
        patient(birth="1985-05-13"),
        patient(family="Dupond"),
        patient(given=["Céline", "Marie"]),
        patient(gender="male"),
    ],
)
def test_a_different_trait_gives_a_different_pseudonym(changed):
    assert pseudonym(changed, RING) != pseudonym(patient(), RING)


def test_the_birth_list_of_given_names_wins_over_given():
    with_list = patient(given=["Céline"])
    with_list["name"][0]["extension"] = [
        {
            "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-birth-list-given-name",
            "valueString": "Céline Marie",
        }
    ]
    assert pseudonym(with_list, RING) == pseudonym(patient(given=["Celine", "Marie"]), RING)


def test_the_official_name_is_the_birth_name():
    married = patient(family="Dupont")
    married["name"].insert(0, {"use": "usual", "family": "Martin", "given": ["Céline"]})
    assert pseudonym(married, RING) == pseudonym(patient(family="Dupont"), RING)


def test_without_family_name_or_birth_date_there_is_no_pseudonym():
    assert pseudonym(patient(family=""), RING) is None
    no_birth = patient()
    del no_birth["birthDate"]
    assert pseudonym(no_birth, RING) is None
    assert identity_traits(no_birth) is None
    assert pseudonym(patient(family=""), RING) is None


def test_an_ins_pseudonym_never_equals_a_traits_pseudonym():
    with_ins, without = pseudonym(patient(ins=NIR), RING), pseudonym(patient(), RING)
    assert parse_pseudonym(with_ins)[1] == "i" and parse_pseudonym(without)[1] == "t"
    # Even a traits "family name" spelling the NIR is hashed in another domain.
    assert pseudonym(patient(family=NIR), RING).split(".")[2] != with_ins.split(".")[2]


def test_the_pseudonym_form_version_and_length():
    value = pseudonym(patient(ins=NIR), Keyring({7: KEY_1}))
    version, kind, digest = parse_pseudonym(value)
    assert (version, kind, len(digest)) == (7, "i", 26)
    assert value == f"v7.i.{digest}" and digest == digest.lower()
    assert parse_pseudonym("v0.i." + digest) is None and parse_pseudonym("v1.x." + digest) is None


def test_not_reversible_without_the_key():
    value = pseudonym(patient(ins=NIR), RING)
    other_key = pseudonym(patient(ins=NIR), Keyring({1: KEY_2}))
    assert other_key != value
    # Unrelated, not just different: the digests share no more characters than chance would.
    same_places = sum(a == b for a, b in zip(value[5:], other_key[5:], strict=True))
    assert same_places < 8
    for unkeyed in (hashlib.sha256(NIR.encode()).digest(), hashlib.sha256(NIR[:13].encode()).digest()):
        assert base64.b32encode(unkeyed[:16]).decode().rstrip("=").lower() not in value
    assert NIR[:13] not in value and "dupont" not in value


def test_stable_across_calls_and_keyrings_with_the_same_key():
    assert pseudonym(patient(), RING) == pseudonym(copy.deepcopy(patient()), Keyring({1: bytes(KEY_1)}))


# --- keys and rotation ---------------------------------------------------------------------------------


def test_rotation_new_pseudonyms_use_the_new_key(tmp_path):
    keys = tmp_path / "pseudonym.keys"
    keys.write_text(f"# the platform's keys\n1:{b64(KEY_1)}\n")
    before = pseudonym(patient(ins=NIR), read_keyring(keys))
    keys.write_text(f"1:{b64(KEY_1)}\n\n2:{b64(KEY_2)}\n")
    ring = read_keyring(keys)
    after = pseudonym(patient(ins=NIR), ring)
    assert ring.current_version == 2
    assert before.startswith("v1.i.") and after.startswith("v2.i.")
    assert before.split(".")[2] != after.split(".")[2]
    assert pseudonym(patient(ins=NIR), ring, version=1) == before


def test_linking_across_a_rotation_needs_both_keys():
    person = patient(ins=NIR)
    old = pseudonym(person, RING)
    both = Keyring({1: KEY_1, 2: KEY_2})
    assert across_rotation(person, both, 1) == (old, pseudonym(person, both))
    traits_only = patient()
    assert across_rotation(traits_only, both, 1) == (pseudonym(traits_only, RING), pseudonym(traits_only, both))
    with pytest.raises(PseudonymKeyError, match="version 1"):
        across_rotation(person, Keyring({2: KEY_2}), 1)


def test_a_directory_of_versioned_key_files(tmp_path):
    (tmp_path / "1.key").write_text(b64(KEY_1) + "\n")
    (tmp_path / "3.key").write_text(b64(KEY_2))
    (tmp_path / "README").write_text("not a key")
    ring = read_keyring(tmp_path)
    assert ring.keys == {1: KEY_1, 3: KEY_2} and ring.current_version == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "No pseudonym key"),
        ("# only a comment\n", "No pseudonym key"),
        (b64(KEY_1), "line 1: expected version:base64key"),
        (f"0:{b64(KEY_1)}", "positive integer"),
        (f"v1:{b64(KEY_1)}", "positive integer"),
        (f"1:{b64(KEY_1)}\n1:{b64(KEY_2)}", "line 2: version 1 is given twice"),
        ("1:not base64!", "not base64"),
        (f"1:{b64(b'short')}", "at least 32 bytes"),
    ],
)
def test_bad_key_files_are_refused_without_showing_a_key(tmp_path, text, message):
    keys = tmp_path / "keys"
    keys.write_text(text)
    with pytest.raises(PseudonymKeyError, match=message) as refused:
        read_keyring(keys)
    assert b64(KEY_1) not in str(refused.value) and b64(KEY_2) not in str(refused.value)


def test_a_keyring_shows_its_versions_never_its_keys():
    ring = Keyring({1: KEY_1, 2: KEY_2})
    assert KEY_1.hex() not in repr(ring) and str(KEY_1) not in repr(ring) and b64(KEY_1) not in repr(ring)
    assert ring.current_version == 2


def test_a_directory_key_named_otherwise_is_refused(tmp_path):
    (tmp_path / "current.key").write_text(b64(KEY_1))
    with pytest.raises(PseudonymKeyError, match="current.key: the version must be a positive integer"):
        read_keyring(tmp_path)


def test_a_missing_key_file_is_refused(tmp_path):
    with pytest.raises(PseudonymKeyError, match="Cannot read"):
        read_keyring(tmp_path / "absent")


def test_the_development_key_is_made_once_private_under_var_dir(tmp_path):
    settings = Settings(var_dir=str(tmp_path / "var"))
    first, second = load_keyring(settings), load_keyring(settings)
    path = tmp_path / "var" / "keys" / "pseudonym-v1.key"
    assert first == second and first.current_version == 1 and len(first.key(1)) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_pseudonym_key_file_setting(tmp_path, monkeypatch):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"4:{b64(KEY_2)}\n")
    monkeypatch.setenv("PSEUDONYM_KEY_FILE", str(keys))
    settings = Settings.from_env()
    assert settings.pseudonym_key_file == str(keys)
    assert load_keyring(settings).keys == {4: KEY_2}
    monkeypatch.setenv("PSEUDONYM_KEY_FILE", "")
    assert Settings.from_env().pseudonym_key_file is None


# --- age classes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "age, expected", [(0, "09"), (9, "09"), (10, "19"), (19, "19"), (20, "29"), (89, "89"), (90, "90"), (105, "90")]
)
def test_age_classes_at_their_boundaries(age, expected):
    assert age_class(f"{2021 - age}-03-01", date(2021, 3, 1)) == expected


def test_the_age_is_computed_at_sampling_birthday_the_day_after():
    assert age_class("2011-03-02", date(2021, 3, 1)) == "09"
    assert age_class("2011-03-02", date(2021, 3, 2)) == "19"
    assert age_class("1931-03-02", date(2021, 3, 1)) == "89"
    assert age_class("1931-03-02", date(2021, 3, 2)) == "90"


def test_the_sampling_day_is_the_paris_day():
    specimen = {"collection": {"collectedDateTime": "2021-03-01T23:30:00Z"}}  # 00:30 in Paris, March 2nd
    day = sampling_date(specimen, {})
    assert day == date(2021, 3, 2)
    assert age_class("2011-03-02", day) == "19"
    assert sampling_date(None, {"effectiveDateTime": "2021-07-01T23:30:00+00:00"}) == date(2021, 7, 2)
    assert sampling_date({"collection": {"collectedPeriod": {"start": "2021-07-01"}}}, {}) == date(2021, 7, 1)
    assert sampling_date(None, {"effectiveDateTime": "garbage"}) is None


def test_partial_birth_dates_give_a_class_only_when_certain():
    assert age_class("1980", date(2021, 6, 1)) == "49"  # 40 or 41
    assert age_class("1981", date(2021, 6, 1)) is None  # 39 or 40
    assert age_class("1981-05", date(2021, 6, 1)) == "49"
    assert age_class("1981-06", date(2021, 6, 15)) is None  # 39 or 40 depending on the day
    assert age_class("2000-02", date(2021, 3, 1)) == "29"  # February's last day is handled


def test_no_age_class_without_a_sound_birth_date():
    assert age_class(None, date(2021, 3, 1)) is None
    assert age_class("1980-02-30", date(2021, 3, 1)) is None
    assert age_class("2021-03-02", date(2021, 3, 1)) is None  # sampled before birth
    assert age_class("1980-01-01", None) is None


# --- départements ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "postal_code, expected",
    [
        ("75001", "75"),
        ("01000", "01"),
        ("20090", "2A"),
        ("20190", "2A"),
        ("20200", "2B"),
        ("20620", "2B"),
        ("97411", "974"),
        ("97100", "971"),
        ("97600", "976"),
        ("97150", "978"),
        ("97133", "977"),
        ("97500", "975"),
        ("98800", "988"),
        ("98000", "99"),
        ("00100", None),
        ("7501", None),
        ("75 001", None),
        (None, None),
    ],
)
def test_departement_of_postal_codes(postal_code, expected):
    assert departement_of_postal_code(postal_code) == expected


@pytest.mark.parametrize(
    "cog, expected",
    [
        ("2A004", "2A"),
        ("2B033", "2B"),
        ("75056", "75"),
        ("97411", "974"),
        ("97801", "978"),
        ("99109", "99"),
        ("2C004", None),
    ],
)
def test_departement_of_insee_codes(cog, expected):
    assert departement_of_insee(cog) == expected


def with_address(*addresses):
    resource = patient()
    resource["address"] = list(addresses)
    return resource


def test_departement_of_the_patient_home_address():
    assert departement_of(with_address({"postalCode": "20090", "country": "FR"})) == "2A"
    work, home = {"use": "work", "postalCode": "75001"}, {"use": "home", "postalCode": "69003"}
    assert departement_of(with_address(work, home)) == "69"
    assert departement_of(with_address({"use": "old", "postalCode": "75001"}, {"postalCode": "13001"})) == "13"
    assert departement_of(with_address()) is None
    assert departement_of(patient()) is None


def test_the_insee_code_wins_over_the_postal_code():
    # 05110 serves communes of both Hautes-Alpes and Alpes-de-Haute-Provence.
    assert departement_of(with_address({"postalCode": "05110", "district": "04209"})) == "04"
    extension = {
        "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code",
        "valueCoding": {"code": "2A004"},
    }
    assert departement_of(with_address({"postalCode": "20200", "extension": [extension]})) == "2A"
    assert departement_of(with_address({"postalCode": "75001", "district": "Paris 1er"})) == "75"


def test_abroad_is_99():
    assert departement_of(with_address({"postalCode": "10115", "country": "DE"})) == "99"
    assert departement_of(with_address({"postalCode": "10115", "country": "Allemagne"})) == "99"
    assert departement_of(with_address({"postalCode": "98000", "country": "FR"})) == "99"
    assert departement_of(with_address({"postalCode": "97400", "country": "RE"})) == "974"
    assert departement_of(with_address({"postalCode": "75001", "country": "France"})) == "75"
    assert departement_of(with_address({"postalCode": "69003", "country": "France métropolitaine"})) == "69"


# --- test, result, performer --------------------------------------------------------------------------------


def observation(loinc="94309-2", value=None, **extra):
    resource = {"code": {"coding": [{"system": "http://loinc.org", "code": loinc}]}, **extra}
    if value:
        resource["valueCodeableConcept"] = {"coding": [{"system": "http://snomed.info/sct", "code": value}]}
    return resource


def test_test_types_from_the_loinc_code():
    assert kind_of_test(observation("94309-2")) == "naat"
    assert kind_of_test(observation("94558-4")) == "antigen"
    assert kind_of_test(observation("94762-2")) == "serology"
    assert kind_of_test(observation("1234-5")) is None
    assert kind_of_test({}) is None


def test_results_from_snomed_codes_and_interpretations():
    assert result_of(observation(value="260373001")) == "detected"
    assert result_of(observation(value="260415000")) == "not-detected"
    assert result_of(observation(value="419984006")) == "inconclusive"
    interpretation = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    positive = {
        "valueQuantity": {"value": 120},
        "interpretation": [{"coding": [{"system": interpretation, "code": "POS"}]}],
    }
    assert result_of(positive) == "detected"
    assert result_of({"valueQuantity": {"value": 120}}) == "inconclusive"
    assert result_of(observation(value="123")) is None


@pytest.mark.parametrize(
    "types, expected",
    [
        (None, "laboratoire"),
        ([{"text": "Laboratoire de biologie médicale"}], "laboratoire"),
        ([{"text": "Pharmacie d'officine"}], "pharmacie"),
        ([{"coding": [{"display": "Cabinet infirmier"}]}], "infirmier"),
        ([{"text": "Médecin généraliste"}], "medecin"),
        ([{"text": "Centre de vaccination"}], "autre"),
    ],
)
def test_performer_types(types, expected):
    organization = {"resourceType": "Organization"} | ({"type": types} if types else {})
    assert performer_type(organization) == expected


def test_no_performing_organization_is_a_professional_on_their_own():
    assert performer_type(None) == "professionnel"


@pytest.mark.parametrize(
    "role, expected",
    [("pharmacist", "pharmacie"), ("nurse", "infirmier"), ("doctor", "medecin"), ("laboratory", "laboratoire")],
)
def test_web_form_sites_are_typed_by_the_role_of_who_enters(role, expected):
    principal = Principal(
        "user", "demo", "Camille Démo", role, parse("user/*.write"), "750000001", "Structure", frozenset({"750000002"})
    )
    site = site_organization(principal, "750000002")
    assert performer_type(site) == expected
    assert finess_of(site) == "750000002"


def test_fold_keeps_only_ascii_letters_and_digits():
    assert fold("  Élise-Anne d’Hô ") == "eliseannedho"
    assert fold(None) == ""


# --- the record of synthetic results -------------------------------------------------------------------------


def resources_of_bundle(bundle: dict) -> dict:
    """The resources load_result_resources would give, taken from a generated transaction Bundle."""
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    by_type = {r["resourceType"]: r for r in by_url.values() if r["resourceType"] != "Organization"}
    report = by_type["DiagnosticReport"]
    return {
        "report": report,
        "observation": by_type["Observation"],
        "specimen": by_type.get("Specimen"),
        "patient": by_type["Patient"],
        "organization": by_url[report["performer"][0]["reference"]],
    }


def personal_values(person) -> list[str]:
    values = [person.family, *person.given, person.birth_date.isoformat(), person.birth_place, person.birth_cog]
    values += [person.usage_family, person.ins, person.phone, person.email, person.address["postalCode"]]
    values += [person.address["city"], *person.address["line"]]
    if person.ins:
        values.append(person.ins[:13])
    return [v for v in values if v]


def leaks(record: dict, person) -> list[str]:
    """The person's values found in the record: inside any field (case, accents and punctuation
    folded) for values long enough to mean something, as a whole field for the shorter ones. The
    field names are the fixed RECORD_FIELDS ("finess" holds "Inès" once folded)."""
    assert tuple(record)[: len(RECORD_FIELDS)] == RECORD_FIELDS
    fields = [json.dumps(v, ensure_ascii=False).strip('"') for v in record.values()]
    found = []
    for value in personal_values(person):
        if any(value.casefold() == f.casefold() for f in fields):
            found.append(value)
        elif len(fold(value)) >= 4 and any(fold(value) in fold(f) or value.casefold() in f.casefold() for f in fields):
            found.append(value)
    return found


def test_synthetic_records_hold_no_personal_value():
    rng = random.Random(2021)
    now = datetime(2021, 7, 9, 10, 0, tzinfo=UTC)
    ring = Keyring({1: KEY_1})
    seen_kinds, seen_departements, seen_tests = set(), set(), set()
    for _ in range(300):
        person = make_person(rng, now.date())
        resources = resources_of_bundle(generate_result_bundle(rng, person=person, now=now))
        record = record_of(resources, Settings(), ring)
        assert tuple(record) == RECORD_FIELDS
        assert leaks(record, person) == []
        # The values checked are really in what the record was made from.
        assert person.family in json.dumps(resources["patient"], ensure_ascii=False)
        assert record["pseudonym"] == pseudonym(resources["patient"], ring)
        assert record["sampling_date"] and record["sex"] in ("M", "F")
        # The generator may draw a birth after the sampling (newborns): no class then.
        born_after = person.birth_date.isoformat() > record["sampling_date"]
        assert (record["age_class"] is None) == born_after
        assert record["departement"] and record["test_type"] and record["result"]
        assert record["performer_type"] == "laboratoire" and record["finess"]
        seen_kinds.add(parse_pseudonym(record["pseudonym"])[1])
        seen_departements.add(record["departement"])
        seen_tests.add(record["test_type"])
    assert seen_kinds == {"i", "t"}
    assert {"2A", "2B", "974", "972", "971", "75"} <= seen_departements
    assert seen_tests == {"naat", "antigen", "serology"}


def test_the_leak_check_finds_a_personal_value():
    person = make_person(random.Random(5), date(2021, 7, 9))
    resources = resources_of_bundle(generate_result_bundle(random.Random(6), person=person))
    record = record_of(resources, Settings(), RING)
    assert leaks({**record, "extra": person.birth_date.isoformat()}, person)
    assert leaks({**record, "extra": f"Résultat de {person.family.upper()}"}, person)


def post_result(client, app, person, lab, seed: int) -> dict:
    bundle = generate_result_bundle(random.Random(seed), lab, person=person, include_legal_entity=False)
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    report = next(
        e["response"]["location"].split("/")[1]
        for e in response.get_json()["entry"]
        if e["response"]["location"].startswith("DiagnosticReport/")
    )
    return load_result_resources(app.extensions["sidep.store"], "DiagnosticReport", report)


def test_stored_results_of_one_person_in_two_laboratories_share_the_pseudonym(client, app, settings):
    person = make_person(random.Random(12), date(2021, 7, 9))
    person.ins_system, person.ins = INS_NIR, NIR
    first = post_result(client, app, person, LABS[0], 1)
    second = post_result(client, app, person, LABS[1], 2)
    records = [record_of(resources, settings) for resources in (first, second)]
    assert records[0]["pseudonym"] == records[1]["pseudonym"]
    assert records[0]["pseudonym"].startswith("v1.i.")
    assert records[0]["finess"] in {s.finess for s in LABS[0].sites}
    assert records[1]["finess"] in {s.finess for s in LABS[1].sites}
    for record in records:
        assert leaks(record, person) == []
    other = make_person(random.Random(13), date(2021, 7, 9))
    assert record_of(post_result(client, app, other, LABS[0], 3), settings)["pseudonym"] != records[0]["pseudonym"]
