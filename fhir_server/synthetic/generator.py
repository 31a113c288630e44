"""Synthetic SI-DEP result bundles: invented people, real-looking identifiers with valid keys.

Everything is drawn from the `random.Random` passed in, so a seed (and a fixed `now`) gives the same output.

Identifier conventions (the core's resend logic keys on them):
- Laboratory dossier: ServiceRequest.identifier system `https://sidep.example.fr/dossier/<FINESS juridique>`
  (the LIS numbers dossiers per legal entity: its sites share one LIS), value = the dossier number.
- In the same system, the other resources of the dossier: Specimen `<dossier>-P1`, Observation
  `<dossier>-<LOINC code>`, DiagnosticReport `<dossier>` (types differ, so values never collide).
- Each entry is a conditional request on its identifier (`PUT Type?identifier=system|value`), so that a
  retransmitted dossier updates instead of duplicating. Patient: `PUT Patient?identifier=<INS system>|<NIR>`
  when an INS is present, else a plain POST (the server matches on identity traits).
- Organizations: `PUT Organization?identifier=https://finess.esante.gouv.fr|<FINESS>`; a share of bundles
  write the Organization identifier with the older system http://finess.sante.gouv.fr (normalised on write).
"""

from __future__ import annotations

import copy
import random
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import phonenumbers
from stdnum import luhn

from profiles.validators import (
    BIRTH_PLACE_URL,
    DOSSIER_SYSTEM_PREFIX,
    FINESS,
    FINESS_OLD,
    INS_NIA,
    INS_NIR,
    INS_NIR_TEST,
    RAT_DEVICES,
    RPPS,
    nir_key,
)

from ..dossier import ENTRIES, LOINC, PARIS, SNOMED, Dossier, Party, dossier_bundle
from . import data

UCUM = "http://unitsofmeasure.org"
FR_CORE_ID_TYPES = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# Inferred from the guide's "analyse XMAJ" (not a public spec): tags an administrative resend.
UPDATE_TAG_SYSTEM = "https://sidep.example.fr/fhir/CodeSystem/sidep-update"
DETECTED, NOT_DETECTED, INCONCLUSIVE = "260373001", "260415000", "419984006"
SAMPLING_WINDOW = timedelta(days=90)
LAB_SEED = 20200513  # SI-DEP's first day: the default laboratories never change


# --- identifiers ----------------------------------------------------------------------------------


def make_finess(rng: random.Random, departement: str | None = None) -> str:
    body = (departement or rng.choice(data.LAB_DEPARTEMENTS)) + f"{rng.randrange(10**6):06d}"
    return body + luhn.calc_check_digit(body)


def make_rpps(rng: random.Random) -> str:
    body = "1" + f"{rng.randrange(10**9):09d}"
    return body + luhn.calc_check_digit(body)


def make_nir(rng: random.Random, sex: str, birth_date: date, birth_cog: str, first_digit: str | None = None) -> str:
    """NIR (or NIA with first_digit 7/8): sex, year, month, COG code of birth place, order, key."""
    lead = first_digit or ("1" if sex == "male" else "2")
    body = f"{lead}{birth_date.year % 100:02d}{birth_date.month:02d}{birth_cog}{rng.randrange(1, 1000):03d}"
    return body + f"{nir_key(body):02d}"


def _uuid(rng: random.Random) -> str:
    return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"


# --- laboratories ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    finess: str  # FINESS géographique
    name: str
    city: str
    postal_code: str


@dataclass(frozen=True)
class Laboratory:
    finess: str  # FINESS juridique
    name: str
    sites: tuple[Site, ...]

    @property
    def dossier_system(self) -> str:
        return DOSSIER_SYSTEM_PREFIX + self.finess


def make_laboratories(rng: random.Random, n: int) -> list[Laboratory]:
    """n laboratories (legal entities), each with 1 to 4 sites; all FINESS numbers distinct."""
    used: set[str] = set()

    def fresh(departement: str) -> str:
        while True:
            number = make_finess(rng, departement)
            if number not in used:
                used.add(number)
                return number

    labs = []
    for i in range(n):
        departement = rng.choice(data.LAB_DEPARTEMENTS)
        name = f"{rng.choice(data.LAB_NAMES)} {i + 1}"
        sites = []
        for s in range(rng.randint(1, 4)):
            cog, city, postal = rng.choice(data.COMMUNES)
            sites.append(Site(fresh(departement), f"{name} — site {city} {s + 1}", city, postal))
        labs.append(Laboratory(fresh(departement), f"SELAS {name}", tuple(sites)))
    return labs


@lru_cache(maxsize=1)
def default_laboratories() -> tuple[Laboratory, ...]:
    return tuple(make_laboratories(random.Random(LAB_SEED), 20))


# --- people ---------------------------------------------------------------------------------------


@dataclass
class Person:
    sex: str
    given: list[str]
    family: str  # birth family name
    usage_family: str | None
    birth_date: date
    birth_cog: str
    birth_place: str
    born_abroad: bool
    ins_system: str | None
    ins: str | None
    phone: str | None
    email: str | None
    address: dict = field(default_factory=dict)
    birth_place_sent: bool = True  # the birth-place extension is optional: not every LIS sends it


def _weighted(rng: random.Random, pairs) -> str:
    values, weights = zip(*pairs, strict=True)
    return rng.choices(values, weights)[0]


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum() or ch in "-")


def _valid_phone(rng: random.Random, region: str, national_prefix: str, length: int, national: bool) -> str:
    """Random digits after a prefix until phonenumbers says the number exists (ARCEP/ITU ranges)."""
    for _ in range(200):
        digits = national_prefix + "".join(rng.choice("0123456789") for _ in range(length - len(national_prefix)))
        number = phonenumbers.parse(digits, region)
        if phonenumbers.is_valid_number(number):
            return digits if national else phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise RuntimeError(f"no valid {region} number with prefix {national_prefix}")


def make_phone(rng: random.Random, foreign_region: str | None = None, overseas: str | None = None) -> str:
    """A mobile number in one of the guide's accepted spellings."""
    if foreign_region:
        example = phonenumbers.example_number_for_type(foreign_region, phonenumbers.PhoneNumberType.MOBILE)
        national = str(example.national_number)
        keep = max(len(national) - 5, 1)
        return _valid_phone(
            rng,
            foreign_region,
            "+" + str(example.country_code) + national[:keep],
            len(national) + 1 + len(str(example.country_code)),
            national=False,
        )
    if overseas == "RE":
        return _valid_phone(rng, "RE", rng.choice(("0692", "0693")), 10, national=True)
    prefix = rng.choice(("06", "06", "07"))
    prefix += rng.choice("5678") if prefix == "07" else rng.choice("123456789")
    national = _valid_phone(rng, "FR", prefix, 10, national=True)
    return national if rng.random() < 0.6 else "+33" + national[1:]


def make_email(rng: random.Random, given: str, family: str) -> str:
    style = rng.randrange(3)
    local = {
        0: f"{_ascii(given)}.{_ascii(family)}",
        1: f"{_ascii(given)[:1]}{_ascii(family)}",
        2: f"{_ascii(given)}.{_ascii(family)}{rng.randrange(1, 99)}",
    }[style]
    return f"{local.strip('-.') or 'patient'}@{rng.choice(data.EMAIL_DOMAINS)}"


def make_person(
    rng: random.Random, today: date | None = None, corsican: bool | None = None, no_contact_rate: float = 0.10
) -> Person:
    today = today or date.today()
    sex = rng.choice(("male", "female"))
    firsts = data.GIVEN_MALE if sex == "male" else data.GIVEN_FEMALE
    given = rng.sample(firsts, rng.choices((1, 2, 3), (0.55, 0.35, 0.10))[0])
    family = rng.choice(data.FAMILY)
    usage = rng.choice(data.FAMILY) if sex == "female" and rng.random() < 0.25 else None
    birth_date = today - timedelta(days=rng.randrange(1, 92 * 365))
    born_abroad = corsican is not True and rng.random() < 0.08
    if born_abroad:
        cog, place, region = rng.choice(data.COUNTRIES)
    else:
        pool = data.CORSICAN_COMMUNES if corsican or (corsican is None and rng.random() < 0.08) else data.COMMUNES
        cog, place, _ = rng.choice(pool)
        region = None
    ins_system, ins = _make_ins(rng, sex, birth_date, cog, born_abroad)
    home_cog, city, postal = rng.choice(data.COMMUNES)
    address = {
        "use": "home",
        "line": [f"{rng.randint(1, 180)} {rng.choice(data.STREETS)}"],
        "city": city,
        "postalCode": postal,
        "country": "FR",
    }
    phone = email = None
    if rng.random() >= no_contact_rate:  # the guide: ~10% of patients came with no contact at all
        wants_phone, wants_email = rng.random() < 0.9, rng.random() < (0.8 if born_abroad else 0.55)
        if not (wants_phone or wants_email):
            wants_phone = True
        if wants_phone:
            foreign = region if born_abroad and rng.random() < 0.5 else None
            phone = make_phone(rng, foreign, overseas="RE" if home_cog == "97411" else None)
        if wants_email:
            email = make_email(rng, given[0], usage or family)
    return Person(
        sex,
        given,
        family,
        usage,
        birth_date,
        cog,
        place,
        born_abroad,
        ins_system,
        ins,
        phone,
        email,
        address,
        birth_place_sent=rng.random() < 0.7,
    )


def _make_ins(rng, sex, birth_date, cog, born_abroad) -> tuple[str | None, str | None]:
    draw = rng.random()
    if born_abroad and draw < 0.25:
        return INS_NIA, make_nir(rng, sex, birth_date, cog, first_digit=rng.choice("78"))
    if draw < 0.82:
        return INS_NIR, make_nir(rng, sex, birth_date, cog)
    if draw < 0.87:
        return INS_NIR_TEST, make_nir(rng, sex, birth_date, cog)
    return None, None  # no INS: matched on identity traits


# --- resources --------------------------------------------------------------------------------------


def _finess_identifier(number: str, kind: str, old_system: bool = False) -> dict:
    return {
        "use": "official",
        "system": FINESS_OLD if old_system else FINESS,
        "value": number,
        "type": {"coding": [{"system": FR_CORE_ID_TYPES, "code": kind}]},
    }


def legal_entity_resource(lab: Laboratory, old_system: bool = False) -> dict:
    return {
        "resourceType": "Organization",
        "identifier": [_finess_identifier(lab.finess, "FINEJ", old_system)],
        "active": True,
        "name": lab.name,
    }


def site_resource(lab: Laboratory, site: Site, legal_entity_ref: str | None, old_system: bool = False) -> dict:
    part_of = {"identifier": {"system": FINESS, "value": lab.finess}, "display": lab.name}
    if legal_entity_ref:
        part_of["reference"] = legal_entity_ref
    return {
        "resourceType": "Organization",
        "identifier": [_finess_identifier(site.finess, "FINEG", old_system)],
        "active": True,
        "type": [{"text": "Laboratoire de biologie médicale"}],
        "name": site.name,
        "address": [{"use": "work", "city": site.city, "postalCode": site.postal_code, "country": "FR"}],
        "partOf": part_of,
    }


def patient_resource(person: Person) -> dict:
    patient = {"resourceType": "Patient"}
    if person.ins:
        code, use = {
            INS_NIR: ("INS-NIR", "official"),
            INS_NIR_TEST: ("INS-NIR-TEST", "official"),
            INS_NIA: ("INS-NIA", "temp"),
        }[person.ins_system]
        patient["identifier"] = [
            {
                "use": use,
                "type": {"coding": [{"system": FR_CORE_ID_TYPES, "code": code}]},
                "system": person.ins_system,
                "value": person.ins,
            }
        ]
    patient["name"] = [{"use": "official", "family": person.family, "given": list(person.given)}]
    if person.usage_family:
        patient["name"].append({"use": "usual", "family": person.usage_family, "given": [person.given[0]]})
    telecom = []
    if person.phone:
        telecom.append({"system": "phone", "value": person.phone, "use": "mobile"})
    if person.email:
        telecom.append({"system": "email", "value": person.email})
    if telecom:
        patient["telecom"] = telecom
    patient["gender"] = person.sex
    patient["birthDate"] = person.birth_date.isoformat()
    patient["address"] = [dict(person.address)]
    if person.birth_place_sent:
        place = {"district": person.birth_cog}
        place.update(
            {"country": person.birth_place} if person.born_abroad else {"city": person.birth_place, "country": "FR"}
        )
        patient["extension"] = [{"url": BIRTH_PLACE_URL, "valueAddress": place}]
    return patient


def _coding(system: str, concept) -> dict:
    return {"system": system, "code": concept.code, "display": concept.display}


@lru_cache(maxsize=8)
def _test_codes(kind: str) -> tuple:
    from terminology.service import get_service

    url = f"https://sidep.example.fr/fhir/ValueSet/sars-cov-2-{kind}-tests"
    return tuple(c for c in get_service().members(url) if c.properties.get("level") == "test")


@lru_cache(maxsize=1)
def _rat_devices() -> tuple:
    from terminology.service import get_service

    return tuple(
        c
        for c in get_service().members(
            "https://sidep.example.fr/fhir/ValueSet/dcc-covid-19-lab-test-manufacturer-and-name"
        )
        if c.properties.get("status") != "inactive"
    )


def _concept(system: str, code: str):
    from terminology.service import get_service

    return get_service().concept(system, code)


def _result_value(rng: random.Random, test, positive: bool) -> dict:
    if test.properties.get("scale") == "Qn":
        value = round(rng.uniform(15, 2500) if positive else rng.uniform(0.1, 0.9), 1)
        code, display = ("POS", "Positive") if positive else ("NEG", "Negative")
        return {
            "valueQuantity": {"value": value, "unit": "U/mL", "system": UCUM, "code": "U/mL"},
            "interpretation": [{"coding": [{"system": INTERPRETATION, "code": code, "display": display}]}],
        }
    result = DETECTED if positive else (INCONCLUSIVE if rng.random() < 0.01 else NOT_DETECTED)
    return {"valueCodeableConcept": {"coding": [_coding(SNOMED, _concept(SNOMED, result))]}}


def generate_result_bundle(
    rng: random.Random,
    lab: Laboratory | None = None,
    *,
    site: Site | None = None,
    person: Person | None = None,
    now: datetime | None = None,
    positive_rate: float = 0.10,
    kind: str | None = None,
    include_legal_entity: bool = True,
    old_finess_rate: float = 0.05,
) -> dict:
    """A transaction Bundle for one laboratory dossier: Patient, ServiceRequest, Specimen, Observation,
    DiagnosticReport and the performing site Organization (plus its legal entity, unless told not to)."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    lab = lab or rng.choice(default_laboratories())
    site = site or rng.choice(lab.sites)
    person = person or make_person(rng, now.date())
    kind = kind or _weighted(rng, data.KIND_WEIGHTS)
    test = rng.choice(_test_codes(kind))
    positive = rng.random() < positive_rate
    collected = now - timedelta(hours=2) - timedelta(seconds=rng.randrange(int(SAMPLING_WINDOW.total_seconds())))
    issued = min(collected + timedelta(minutes=rng.randrange(30, 30 * 60)), now)
    dossier = f"{collected.astimezone(PARIS):%y%m%d}{rng.randrange(10**9):09d}"
    system = lab.dossier_system
    old_finess = rng.random() < old_finess_rate
    ids = {name: _uuid(rng) for name in ("legal", "site", "patient", "request", "specimen", "observation", "report")}

    parties = []
    if include_legal_entity:
        parties.append(
            Party(legal_entity_resource(lab, old_finess), "PUT", f"identifier={FINESS}|{lab.finess}", ids["legal"])
        )
    parties.append(
        Party(
            site_resource(lab, site, ids["legal"] if include_legal_entity else None, old_finess),
            "PUT",
            f"identifier={FINESS}|{site.finess}",
            ids["site"],
        )
    )
    authored = collected - timedelta(minutes=rng.randrange(5, 60))
    requester = None
    if rng.random() < 0.3:
        requester = {
            "identifier": {"system": RPPS, "value": make_rpps(rng)},
            "display": f"Dr {rng.choice(data.FAMILY)}",
        }
    specimen_code = data.SPECIMEN_FOR_CODE.get(test.code) or _weighted(rng, data.SPECIMENS_BY_KIND[kind])
    value = _result_value(rng, test, positive)
    device = None
    if kind == "antigen" and test.properties.get("dccTestType"):
        chosen = rng.choice(_rat_devices())
        device = {"identifier": {"system": RAT_DEVICES, "value": chosen.code}, "display": chosen.display}
    dossier_facts = Dossier(
        system=system,
        number=dossier,
        patient=patient_resource(person),
        test_code={"coding": [_coding(LOINC, test)], "text": test.designations.get("fr", test.display)},
        specimen_type=_coding(SNOMED, _concept(SNOMED, specimen_code)),
        value=value,
        collected=collected,
        issued=issued,
        authored=authored,
        parties=parties,
        performers=[parties[-1].reference(site.name)],
        requester=requester,
        device=device,
    )
    return dossier_bundle(dossier_facts, {name: ids[name] for name in ENTRIES})


# --- retransmissions ----------------------------------------------------------------------------------

RESEND_CHANGES = ("none", "contact", "identity", "result")


def resend_bundle(rng: random.Random, bundle: dict, change: str = "contact") -> dict:
    """The same dossier sent again, as a laboratory does after a correction (guide, section E):
    - none: identical content (must not re-notify);
    - contact: new phone and e-mail (must re-notify), tagged XMAJ;
    - identity: corrected birth family name and given name, tagged XMAJ;
    - result: the result changes (status corrected; must re-notify).
    Fresh urn:uuid fullUrls, same conditional request URLs."""
    if change not in RESEND_CHANGES:
        raise ValueError(f"change must be one of {RESEND_CHANGES}")
    resent = _renumber(rng, copy.deepcopy(bundle))
    resources = {e["resource"]["resourceType"]: e["resource"] for e in resent["entry"]}
    patient = resources["Patient"]
    if change == "contact":
        given = patient["name"][0]["given"][0]
        patient["telecom"] = [
            {"system": "phone", "value": make_phone(rng), "use": "mobile"},
            {"system": "email", "value": make_email(rng, given, patient["name"][0]["family"])},
        ]
    elif change == "identity":
        patient["name"][0]["family"] = rng.choice([f for f in data.FAMILY if f != patient["name"][0]["family"]])
    elif change == "result":
        _flip_result(rng, resources["Observation"])
        resources["DiagnosticReport"]["status"] = "corrected"
    if change in ("contact", "identity"):
        for resource in resources.values():
            if resource["resourceType"] != "Organization":
                resource.setdefault("meta", {})["tag"] = [
                    {"system": UPDATE_TAG_SYSTEM, "code": "XMAJ", "display": "Mise à jour administrative"}
                ]
    return resent


def _flip_result(rng: random.Random, observation: dict) -> None:
    observation["status"] = "corrected"
    if "valueCodeableConcept" in observation:
        current = observation["valueCodeableConcept"]["coding"][0]["code"]
        new = NOT_DETECTED if current == DETECTED else DETECTED
        observation["valueCodeableConcept"] = {"coding": [_coding(SNOMED, _concept(SNOMED, new))]}
    else:
        quantity = observation["valueQuantity"]
        positive = quantity["value"] < 1
        quantity["value"] = round(rng.uniform(15, 2500) if positive else rng.uniform(0.1, 0.9), 1)
        code, display = ("POS", "Positive") if positive else ("NEG", "Negative")
        observation["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": code, "display": display}]}]


def _renumber(rng: random.Random, bundle: dict) -> dict:
    """New urn:uuid for every entry, references rewritten to match."""
    mapping = {e["fullUrl"]: _uuid(rng) for e in bundle["entry"]}

    def rewrite(node):
        if isinstance(node, dict):
            return {
                k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else rewrite(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for entry in bundle["entry"]:
        entry["fullUrl"] = mapping[entry["fullUrl"]]
        entry["resource"] = rewrite(entry["resource"])
    return bundle


def generate_bundles(
    rng: random.Random,
    count: int,
    *,
    now: datetime | None = None,
    labs=None,
    resend_rate: float = 0.0,
    repeat_patient_rate: float = 0.0,
    **options,
):
    """count bundles: fresh dossiers, and optionally resends of earlier ones and new tests of earlier people."""
    labs = list(labs or default_laboratories())
    now = now or datetime.now(UTC)
    sent: list[dict] = []
    people: list[Person] = []
    for _ in range(count):
        if sent and rng.random() < resend_rate:
            yield resend_bundle(rng, rng.choice(sent), rng.choice(RESEND_CHANGES))
            continue
        person = rng.choice(people) if people and rng.random() < repeat_patient_rate else make_person(rng, now.date())
        _remember(rng, people, person)
        bundle = generate_result_bundle(rng, rng.choice(labs), person=person, now=now, **options)
        _remember(rng, sent, bundle)
        yield bundle


def _remember(rng: random.Random, pool: list, item, cap: int = 1000) -> None:
    """Keep a bounded random sample of the past, so long benchmark runs don't grow memory."""
    if len(pool) < cap:
        pool.append(item)
    else:
        pool[rng.randrange(cap)] = item
