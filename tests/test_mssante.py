"""Certificates to laboratories' MSSanté mailboxes: the ANS extract, the guide's routing rule on
the loaded directory (real SecantusDB), the e-mail to the letter, and `$mssante-route` with
authorisation on."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest

from fhir_server import mssante, mssante_cli
from fhir_server.mssante import ExtractError, certificate_email, certificate_facts, decide, parse_extract
from fhir_server.settings import Settings
from fhir_server.storage import mailboxes
from fhir_server.storage.mailboxes import Mailbox
from fhir_server.synthetic import mssante as synthetic
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories
from operations.generate_certificate import load_result_resources
from tests.test_auth_access import not_there, post_bundle
from workers.channels import Permanent

LAB_A, LAB_B = make_laboratories(random.Random(7), 2)
SITE_A, SITE_B = LAB_A.sites[0], LAB_B.sites[0]
SENDER = Settings().mssante_from


@pytest.fixture
def directory(settings):
    return mailboxes.connect(settings.mongodb_uri, settings.mongodb_db)


def load(directory, mailboxes_: list[dict]):
    return directory.load(parse_extract(synthetic.extract_lines(mailboxes_)))


# -- the extract ---------------------------------------------------------------------------------
def test_the_extract_is_read_by_position_with_both_finess_spellings(tmp_path):
    path = tmp_path / "extract.csv"
    lines = [
        synthetic.site_mailbox(SITE_A),
        synthetic.site_mailbox(SITE_B, idnat=True),
        {**synthetic.unstamped_mailbox(SITE_A.finess), "structure_id_type": "3", "structure_id": "123456789"},
    ]
    synthetic.write_extract(path, lines)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a byte-order mark, as spreadsheets write
    bare, prefixed, siren = list(parse_extract(path))
    assert (bare.kind, bare.finess, prefixed.finess) == ("ORG", SITE_A.finess, SITE_B.finess)
    assert bare.address == f"resultats.{SITE_A.finess}@{synthetic.DOMAIN}"
    assert bare.organisation == SITE_A.name and "@SIDEP" in bare.service
    assert siren.finess is None  # a SIREN has 9 digits too: not a FINESS


def test_a_header_without_31_columns_is_refused():
    with pytest.raises(ExtractError, match="30 colonnes au lieu de 31"):
        list(parse_extract(synthetic.extract_lines([], header=mssante.HEADER[:30])))
    with pytest.raises(ExtractError, match="vide"):
        list(parse_extract([]))


def test_a_short_line_is_refused_without_its_content():
    lines = synthetic.extract_lines([synthetic.site_mailbox(SITE_A)]) + ["ORG|someone@x.fr|cut"]
    with pytest.raises(ExtractError) as refused:
        list(parse_extract(lines))
    assert "Ligne 3" in str(refused.value) and "someone" not in str(refused.value)


def test_stamp_and_finess_rules():
    personal = next(parse_extract(synthetic.extract_lines([synthetic.personal_mailbox(random.Random(1), "x")])))
    assert mssante.is_stamped(personal) and not mssante.is_routable(personal)
    assert mssante.normalise_finess("1" + SITE_A.finess) == SITE_A.finess
    assert mssante.normalise_finess(" 2A0000001 ") == "2A0000001"
    assert mssante.normalise_finess("12345678") is None and mssante.normalise_finess("2" + SITE_A.finess) is None


# -- the rule --------------------------------------------------------------------------------------
def test_the_rule_site_first_then_legal_entity_else_a_failure_with_counts():
    assert decide("S", "J", ["a@x"], ["b@x"]).level == "site"
    assert decide("S", "J", ["a@x", "A@X"], []).address == "a@x"  # one mailbox, however spelt
    legal = decide("S", "J", [], ["b@x"])
    assert (legal.address, legal.level, legal.site_count, legal.legal_count) == ("b@x", "legal", 0, 1)
    two = decide("111111111", "222222222", ["a@x", "c@x"], ["b@x"])  # nG = 2: not the legal entity's either
    assert two.address is None and two.level is None
    assert two.reason == (
        "Aucune BAL MSSanté estampillée @SIDEP unique : FINESS site 111111111 (2), FINESS juridique 222222222 (1)"
    )
    assert decide("111111111", None, [], []).reason.endswith("FINESS juridique inconnu (0)")


# -- the loaded directory ---------------------------------------------------------------------------
def test_one_stamped_site_mailbox_is_the_route(directory):
    report = load(directory, [synthetic.site_mailbox(SITE_A), synthetic.legal_mailbox(LAB_A)])
    assert (report.lines, report.mailboxes, report.stamped, report.duplicates) == (2, 2, 2, 0)
    route = directory.route(SITE_A.finess, LAB_A.finess)
    assert (route.address, route.level) == (f"resultats.{SITE_A.finess}@{synthetic.DOMAIN}", "site")
    assert (route.site_count, route.legal_count) == (1, 1)


def test_without_a_site_mailbox_the_legal_entity_s_is_the_route(directory):
    load(directory, [synthetic.legal_mailbox(LAB_A, idnat=True), synthetic.site_mailbox(SITE_B, idnat=True)])
    route = directory.route(SITE_A.finess, LAB_A.finess)
    assert (route.address, route.level) == (f"sidep.{LAB_A.finess}@{synthetic.DOMAIN}", "legal")
    assert directory.route(SITE_B.finess, LAB_B.finess).level == "site"  # "1" + FINESS too


def test_two_stamped_mailboxes_are_a_routing_failure_with_counts(directory):
    load(
        directory,
        [
            synthetic.site_mailbox(SITE_A, "resultats"),
            synthetic.site_mailbox(SITE_A, "covid", idnat=True),
            synthetic.legal_mailbox(LAB_A),
        ],
    )
    route = directory.route(SITE_A.finess, LAB_A.finess)
    assert route.address is None and (route.site_count, route.legal_count) == (2, 1)
    assert f"FINESS site {SITE_A.finess} (2), FINESS juridique {LAB_A.finess} (1)" in route.reason
    assert "@" + synthetic.DOMAIN not in route.reason  # operators see numbers, never an address


def test_unstamped_and_personal_mailboxes_are_ignored(directory):
    report = load(
        directory,
        [
            synthetic.unstamped_mailbox(SITE_A.finess),
            synthetic.personal_mailbox(random.Random(3), SITE_A.finess),
            synthetic.personal_mailbox(random.Random(4), LAB_A.finess),
        ],
    )
    assert (report.mailboxes, report.stamped, report.routable) == (3, 2, 0)
    route = directory.route(SITE_A.finess, LAB_A.finess)
    assert route.address is None and (route.site_count, route.legal_count) == (0, 0)
    assert directory.stamped_for(SITE_A.finess) == []


def test_duplicate_lines_count_once(directory):
    mailbox = synthetic.site_mailbox(SITE_A)
    shouting = {**mailbox, "address": mailbox["address"].upper()}
    prefixed = {**mailbox, "structure_id": "1" + SITE_A.finess}
    report = load(directory, [mailbox, mailbox, shouting, prefixed, synthetic.site_mailbox(SITE_B)])
    assert (report.lines, report.mailboxes, report.duplicates) == (5, 2, 3)
    assert directory.route(SITE_A.finess, LAB_A.finess).site_count == 1
    assert directory.summary()["duplicates"] == 3


def test_duplicates_across_batches_are_found_too(settings):
    directory = mailboxes.connect(settings.mongodb_uri, settings.mongodb_db)
    directory.batch = 2
    lines = [synthetic.site_mailbox(s) for s in LAB_A.sites] + [synthetic.site_mailbox(SITE_A)] * 3
    report = load(directory, lines)
    assert (report.mailboxes, report.duplicates) == (len(LAB_A.sites), 3)


def test_a_refresh_changes_the_answer_and_removes_the_old_version(directory):
    first = load(directory, [synthetic.site_mailbox(SITE_A)])
    assert directory.route(SITE_A.finess, LAB_A.finess).level == "site"
    second = load(directory, [synthetic.legal_mailbox(LAB_A)])
    assert second.version != first.version and directory.current_version() == second.version
    route = directory.route(SITE_A.finess, LAB_A.finess)
    assert (route.level, route.site_count) == ("legal", 0)
    assert Mailbox.objects(version=first.version).count() == 0
    assert directory.summary()["version"] == second.version


@pytest.mark.parametrize(
    "bad",
    [
        synthetic.extract_lines([synthetic.legal_mailbox(LAB_A)], header=mssante.HEADER + ("Extra",)),
        synthetic.extract_lines([synthetic.legal_mailbox(LAB_A), synthetic.site_mailbox(SITE_B)])[:-1] + ["ORG|cut"],
    ],
    ids=["bad header", "truncated"],
)
def test_a_failed_load_keeps_the_version_in_service(directory, bad):
    good = load(directory, [synthetic.site_mailbox(SITE_A)])
    directory.batch = 1  # what comes before the bad line is written before the load fails
    with pytest.raises(ExtractError):
        directory.load(parse_extract(bad))
    assert directory.current_version() == good.version
    assert directory.route(SITE_A.finess, LAB_A.finess).level == "site"
    assert Mailbox.objects(version__ne=good.version).count() == 0  # what the failed load wrote is gone


def test_without_a_directory_the_reason_says_so(directory):
    route = directory.route(SITE_A.finess, LAB_A.finess)
    assert route.address is None and route.reason.startswith("Annuaire MSSanté non chargé.")
    assert directory.summary() == {"version": None}


def test_the_command_line(directory, settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URI", settings.mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", settings.mongodb_db)
    path = tmp_path / "extract.csv"
    synthetic.write_extract(path, synthetic.directory_for(random.Random(5), [LAB_A, LAB_B]))
    assert mssante_cli.main(["load", str(path)]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert loaded["lines"] == len(LAB_A.sites) + 1 + 2 + 2
    assert mssante_cli.main(["route", SITE_A.finess, LAB_A.finess]) == 0
    assert json.loads(capsys.readouterr().out)["level"] == "site"
    assert mssante_cli.main(["route", SITE_B.finess, LAB_B.finess]) == 0
    assert json.loads(capsys.readouterr().out)["level"] == "legal"
    assert mssante_cli.main(["route", "111111118"]) == 1
    assert "FINESS site 111111118 (0)" in capsys.readouterr().err
    assert mssante_cli.main(["summary"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == loaded["version"]
    bad = tmp_path / "bad.csv"
    bad.write_text("Type de BAL|Adresse BAL\n", encoding="utf-8")
    assert mssante_cli.main(["load", str(bad)]) == 1
    assert "2 colonnes" in capsys.readouterr().err
    assert directory.current_version() == loaded["version"]


# -- the e-mail ------------------------------------------------------------------------------------
@pytest.fixture
def facts(client, app):
    bundle = generate_result_bundle(random.Random(11), LAB_A, include_legal_entity=False)
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    locations = [e["response"]["location"].split("/")[:2] for e in response.get_json()["entry"]]
    ids = {rtype: rid for rtype, rid in locations}
    store = app.extensions["sidep.store"]
    resources = load_result_resources(store, "DiagnosticReport", ids["DiagnosticReport"])
    request_id = mssante.service_request_id(resources)
    assert request_id == ids["ServiceRequest"]
    service_request = store.read("ServiceRequest", request_id).resource
    return certificate_facts(resources, service_request, "2021-07-09T08:05:00Z"), resources


FACSIMILE_LINES = [
    "Bonjour, ",
    "",
    "Vous avez transmis vers l’application SI-DEP un résultat de test Covid-19 ne comportant aucun moyen de "
    "contacter le patient. Un document certifiant le résultat de ce test a été produit mais ne peut donc pas être "
    "transmis au patient. Veuillez trouver ci-joint le certificat et ci-dessous les caractéristiques du patient, "
    "du test et le résultat :",
    "",
    "Patient concerné : ",
    "Nom : {family}",
    "Prénom : {given}",
    "Sexe : {sex}",
    "Date de naissance : {birth_date}",
    "Matricule Identifiant National de Santé (INS) : {ins}",
    "",
    "Test réalisé : Type d’analyse (voir le site de Bioloinc pour la terminologie): {test_code} {test_label} ",
    "Identifiant de la structure ayant réalisé le test : {site} ",
    "Date de prélèvement : {sampled_at}",
    "Date d’intégration du résultat dans l’application SI-DEP : 09/07/2021 10:05",
    "",
    "Résultat du test : {result} ",
    "",
    "N’hésitez pas à promouvoir auprès du patient les différents outils numériques : l’application mobile "
    "TousAntiCovid, https://mesconseilscovid.sante.gouv.fr pour obtenir des conseils personnalisés en fonction de "
    "sa situation et https://sante.fr/recherche/trouver/DepistageCovid pour trouver facilement les lieux de "
    "dépistage les plus proches de chez soi et aller s’y faire tester, en ayant préalablement rempli le "
    "formulaire de pré-enregistrement. ",
    "",
    "En vous remerciant pour votre rôle déterminant dans la lutte contre l’épidémie.",
    "",
    "Ne tentez pas de répondre à ce mail envoyé automatiquement par SI-DEP, votre réponse ne serait pas traitée.",
    "",
    "Bien cordialement,",
    "",
    "L’équipe projet SI-DEP",
]


def test_the_facts_come_from_the_stored_result(facts):
    found, resources = facts
    patient, observation = resources["patient"], resources["observation"]
    name = next(n for n in patient["name"] if n.get("use") == "official")
    assert found.site_finess == resources["organization"]["identifier"][0]["value"]
    assert found.site_finess in {site.finess for site in LAB_A.sites}
    assert (found.family, found.given) == (name["family"], " ".join(name["given"]))
    assert found.dossier == resources["report"]["identifier"][0]["value"]
    assert found.sex == {"male": "Masculin", "female": "Féminin"}[patient["gender"]]
    year, month, day = patient["birthDate"].split("-")
    assert found.birth_date == f"{day}/{month}/{year}"
    assert found.test_code == observation["code"]["coding"][0]["code"]
    assert found.integrated_at == "09/07/2021 10:05"  # Paris summer time
    assert found.result in ("Négatif (SARS-CoV-2 non détecté)", "Positif (SARS-CoV-2 détecté)", "Non conclusif")
    assert len(found.sampled_at) == 16 and found.sampled_at[2] == "/" and found.sampled_at[13] == ":"


def test_the_e_mail_is_the_guide_s_facsimile(facts):
    found, _ = facts
    pdf = b"%PDF-1.7 certificate"
    message = certificate_email(found, SENDER, "resultats@labo.mssante.example.fr", pdf, "m1@sidep", 1_000_000)
    assert message["From"] == "noreply.sidep@enovacom.mssante.fr"
    assert message["To"] == "resultats@labo.mssante.example.fr"
    assert message["Message-ID"] == "<m1@sidep>"
    assert message["Subject"] == (
        f"[Projet SI-DEP] Certificat de test : {found.site_finess} | {found.dossier} | {found.family} | {found.given}"
    )
    text = message.get_body(("plain",))
    assert text.get_content_charset() == "utf-8"
    shown = {**{k: getattr(found, k) for k in found.__dataclass_fields__}, "site": found.site_finess}
    expected = [line.format(**shown) for line in FACSIMILE_LINES]
    lines = text.get_content().rstrip("\n").split("\n")
    for number, (line, wanted) in enumerate(zip(lines, expected, strict=True), start=1):
        assert line == wanted, f"body line {number}"
    (attachment,) = message.iter_attachments()
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"{found.site_finess}_{found.dossier}_{found.family.upper()}_{found.given}.pdf"
    assert attachment.get_content() == pdf


def test_the_attachment_name_is_safe_and_keeps_accents(facts):
    found, _ = facts
    odd = mssante.CertificateFacts(**{**found.__dict__, "family": "Lefèvre/../x", "given": "Zoé\r\nBcc: y"})
    message = certificate_email(odd, SENDER, "to@x.example.fr", b"%PDF", "m2@sidep", 1_000_000)
    name = next(message.iter_attachments()).get_filename()
    assert name == f"{found.site_finess}_{found.dossier}_LEFÈVRE-..-X_Zoé Bcc: y.pdf"
    assert "\r" not in str(message["Subject"]) and "\n" not in message["Subject"].replace("\n ", "")


def test_a_message_over_the_limit_is_refused(facts):
    found, _ = facts
    limit = Settings().mssante_max_bytes
    assert limit == 1_000_000
    fits = certificate_email(found, SENDER, "to@x.example.fr", b"%PDF" + b"0" * 700_000, "m3@sidep", limit)
    assert len(fits.as_bytes()) <= limit
    with pytest.raises(Permanent) as refused:  # base64 makes 760 kB of PDF more than 1 MB of message
        certificate_email(found, SENDER, "to@x.example.fr", b"%PDF" + b"0" * 760_000, "m4@sidep", limit)
    assert "au-delà de la limite de 1000000 octets" in refused.value.reason
    assert found.family not in refused.value.reason


def test_the_size_limit_is_the_setting(monkeypatch):
    monkeypatch.setenv("MSSANTE_MAX_BYTES", "2000")
    assert Settings.from_env().mssante_max_bytes == 2000


# -- $mssante-route ----------------------------------------------------------------------------------
@dataclass
class Routed:
    a: object  # sessions of laboratory A, B and an operator
    b: object
    operator: object
    org_a: str  # the site Organization each laboratory's result named
    org_b: str
    site_a: str  # its FINESS
    site_b: str


def site_of(posted) -> str:
    site = next(e["resource"] for e in posted.bundle["entry"] if "partOf" in e["resource"])
    return site["identifier"][0]["value"]


@pytest.fixture
def routed(secured):
    a = secured.client_session(LAB_A)
    b = secured.client_session(LAB_B)
    operator = secured.client_session(None, "system/*.*", role="operator")
    posted_a, posted_b = post_bundle(a, LAB_A, 1), post_bundle(b, LAB_B, 2)
    directory = mailboxes.connect(secured.settings.mongodb_uri, secured.settings.mongodb_db)
    # A: one mailbox per site; B: two for the legal entity (a failure)
    site_boxes = [synthetic.site_mailbox(site) for site in LAB_A.sites]
    load(directory, [*site_boxes, synthetic.legal_mailbox(LAB_B), synthetic.legal_mailbox(LAB_B, "covid")])
    return Routed(
        a, b, operator, posted_a["Organization"], posted_b["Organization"], site_of(posted_a), site_of(posted_b)
    )


def parameters(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Parameters"
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in body["parameter"]}


def test_a_laboratory_sees_the_route_of_its_own_site(routed):
    found = parameters(routed.a.get(f"Organization/{routed.org_a}/$mssante-route"))
    assert found == {
        "site-finess": routed.site_a,
        "legal-finess": LAB_A.finess,
        "address": f"resultats.{routed.site_a}@{synthetic.DOMAIN}",
        "level": "site",
    }
    typed = parameters(routed.a.get("Organization/$mssante-route", params={"finess": routed.site_a}))
    assert (typed["level"], typed["legal-finess"]) == ("site", LAB_A.finess)  # the stored site's partOf


def test_another_laboratory_s_organization_answers_as_missing(routed):
    b, org_a = routed.b, routed.org_a
    not_there(b.get(f"Organization/{org_a}/$mssante-route"), "Organization", org_a)
    not_there(b.get("Organization/ffffffffffff/$mssante-route"), "Organization", "ffffffffffff")
    for finess in (routed.site_a, LAB_A.finess):
        refused = b.get("Organization/$mssante-route", params={"finess": finess})
        assert refused.status_code == 404 and refused.json()["issue"][0]["expression"] == ["finess"]
    assert b.get(f"Organization/{org_a}").status_code == 200  # the Organization itself is shared


def test_operators_see_every_route_and_failures_with_counts(routed):
    operator = routed.operator
    assert parameters(operator.get(f"Organization/{routed.org_a}/$mssante-route"))["level"] == "site"
    failed = parameters(operator.get(f"Organization/{routed.org_b}/$mssante-route"))
    assert "address" not in failed and (failed["site-count"], failed["legal-count"]) == (0, 2)
    assert failed["reason"] == (
        f"Aucune BAL MSSanté estampillée @SIDEP unique : FINESS site {routed.site_b} (0), "
        f"FINESS juridique {LAB_B.finess} (2)"
    )
    unknown = parameters(
        operator.get("Organization/$mssante-route", params={"finess": "111111118", "legal-finess": LAB_A.finess})
    )
    assert (unknown["site-count"], unknown["legal-count"]) == (0, 0)


def test_a_bad_finess_parameter_is_a_400_at_the_parameter(routed):
    for params in ({}, {"finess": "12345"}, {"finess": routed.site_a, "legal-finess": "123456780"}):
        response = routed.a.get("Organization/$mssante-route", params=params)
        assert response.status_code == 400, (params, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == ["legal-finess" if "legal-finess" in params else "finess"]
