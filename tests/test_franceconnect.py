"""FranceConnect login against a real local OpenID provider (authlib, over HTTP with `requests`):
the whole flow, each refusal, the provider logout; the SI-DEP identity rule (`compare`) and the
search of a person's Patients across laboratories (`find_patients`) on a real database."""

from __future__ import annotations

import html
import random
import re
import threading
from dataclasses import replace
from datetime import date
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests
from joserfc.jwk import ECKey

from fhir_server.franceconnect import ID_TOKEN, PENDING, FranceConnect, Identity, LoginRefused
from fhir_server.identity_match import compare, find_patients, normalise_name
from fhir_server.oidc_provider import ALGORITHM, start_oidc_provider
from fhir_server.settings import Settings
from fhir_server.synthetic.generator import BIRTH_PLACE_URL, make_person, make_phone, patient_resource
from tests.processes import wait_for
from tests.test_auth_access import LAB_A, LAB_B, post_bundle
from tests.test_web_browser import by_id

CALLBACK = "http://127.0.0.1:9/portail/franceconnect/callback"
AFTER_LOGOUT = "http://127.0.0.1:9/portail/"
CLIENT_ID, CLIENT_SECRET = "portail-sidep", "s3cret-du-portail"
ANGELA = {
    "sub": "b6048e95bb134ec5b1d1e1fa69f287172e91722b9354d637a1bcf2ebb0fd2ef5v1",
    "given_name": "Angela Claire Louise",
    "family_name": "DUBOIS",
    "birthdate": "1962-08-24",
    "gender": "female",
    "birthplace": "75107",
    "birthcountry": "99100",
}
BORN_ABROAD = {
    "sub": "7a3f0c51d7e64c09a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718v1",
    "given_name": "Jean-Pierre Marie",
    "family_name": "MARTIN",
    "birthdate": "1980-01-01",  # month and day unknown: FranceConnect presumes -01
    "gender": "male",
    "birthplace": "",
    "birthcountry": "99350",
}
LOW_LEVEL = {**ANGELA, "sub": "low-level-account", "acr": "eidas1"}


@pytest.fixture
def provider():
    running = start_oidc_provider(
        [ANGELA, BORN_ABROAD, LOW_LEVEL], CLIENT_ID, CLIENT_SECRET, [CALLBACK], [AFTER_LOGOUT]
    )
    yield running
    running.stop()


def client_for(provider, **overrides) -> FranceConnect:
    settings = Settings(
        franceconnect_issuer=provider.issuer,
        franceconnect_client_id=CLIENT_ID,
        franceconnect_client_secret=CLIENT_SECRET,
    ).but(**overrides)
    return FranceConnect(settings)


def log_in(url: str, sub: str, action: str = "login") -> dict:
    """What a browser does: open the login page, submit its form, follow to the callback."""
    page = requests.get(url, timeout=10)
    assert page.status_code == 200, page.text
    form_action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    answer = requests.post(urljoin(url, form_action), data={"user": sub, "action": action}, allow_redirects=False)
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    return {key: values[0] for key, values in parse_qs(urlparse(location).query).items()}


def refusal(fc: FranceConnect, session: dict, args: dict) -> str:
    with pytest.raises(LoginRefused) as refused:
        fc.finish(session, args, CALLBACK)
    return refused.value.reason


# -- the flow ----------------------------------------------------------------------------------------


def test_the_whole_flow_gives_the_certified_identity(provider):
    fc, session = client_for(provider), {}
    url = fc.authorization_url(session, CALLBACK)
    query = parse_qs(urlparse(url).query)
    assert query["scope"] == ["openid given_name family_name birthdate gender birthplace birthcountry"]
    assert query["acr_values"] == ["eidas1"] and query["prompt"] == ["login"]
    assert query["code_challenge_method"] == ["S256"] and query["redirect_uri"] == [CALLBACK]
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32
    assert session[PENDING]["state"] == query["state"][0] and session[PENDING]["nonce"] == query["nonce"][0]

    identity = fc.finish(session, log_in(url, ANGELA["sub"]), CALLBACK)

    assert identity == Identity(
        given_names=["Angela", "Claire", "Louise"],
        family_name="DUBOIS",
        birthdate=date(1962, 8, 24),
        gender="female",
        birthplace="75107",
        birthcountry="99100",
        sub=ANGELA["sub"],
    )
    assert PENDING not in session and session[ID_TOKEN].count(".") == 2


def test_userinfo_as_plain_json_is_read_too(provider):
    provider.signed_userinfo = False
    fc, session = client_for(provider), {}
    identity = fc.finish(session, log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"]), CALLBACK)
    assert identity.family_name == "DUBOIS" and identity.sub == ANGELA["sub"]


def test_a_person_born_abroad_has_no_birthplace_and_a_presumed_birth_date(provider):
    fc, session = client_for(provider), {}
    identity = fc.finish(session, log_in(fc.authorization_url(session, CALLBACK), BORN_ABROAD["sub"]), CALLBACK)
    assert identity.birthplace == "" and identity.birthcountry == "99350"
    assert identity.birthdate == date(1980, 1, 1) and identity.given_names == ["Jean-Pierre", "Marie"]


def test_the_level_asked_is_required(provider):
    fc, session = client_for(provider, franceconnect_acr="eidas2"), {}
    url = fc.authorization_url(session, CALLBACK)
    assert parse_qs(urlparse(url).query)["acr_values"] == ["eidas2"]
    assert fc.finish(session, log_in(url, ANGELA["sub"]), CALLBACK).sub == ANGELA["sub"]

    # a provider answering a lower level than asked
    session = {}
    args = log_in(fc.authorization_url(session, CALLBACK), LOW_LEVEL["sub"])
    assert refusal(fc, session, args).startswith("id-token-claim")


def test_a_state_that_is_not_the_pending_one_is_refused(provider):
    fc, session = client_for(provider), {}
    args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])
    assert refusal(fc, session, {**args, "state": args["state"][:-1] + "x"}) == "state"
    assert ID_TOKEN not in session


def test_a_replayed_callback_and_a_foreign_nonce_are_refused(provider):
    fc, session = client_for(provider), {}
    args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])
    fc.finish(session, args, CALLBACK)
    assert refusal(fc, session, args) == "no-login-pending"

    # an ID token issued for another login (its nonce is not the one this session drew)
    session = {}
    args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])
    session[PENDING]["nonce"] = "n" * 43
    assert refusal(fc, session, args).startswith("id-token-claim")


def test_a_token_signed_by_another_key_is_refused(provider):
    fc, session = client_for(provider), {}
    args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])
    # the same key id as the published key, another private key
    provider.signing_key = ECKey.generate_key("P-256", {"kid": provider.published_key.kid, "alg": ALGORITHM})
    assert refusal(fc, session, args) == "id-token-signature"

    # an unknown key id: the keys are read again (a rotation), then the token is refused
    provider.signing_key = ECKey.generate_key("P-256", {"kid": "not-published", "alg": ALGORITHM})
    session = {}
    args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])
    assert refusal(fc, session, args) == "id-token-signature"


def test_an_expired_token_is_refused_beyond_the_clock_skew(provider):
    fc = client_for(provider, franceconnect_clock_skew=30)
    provider.id_token_lifetime = -90  # expired a minute beyond the tolerated skew
    session = {}
    args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])
    assert refusal(fc, session, args) == "id-token-expired"

    provider.id_token_lifetime = -5  # within the skew: a clock a little ahead of the provider's
    session = {}
    assert fc.finish(session, log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"]), CALLBACK)
    assert refusal(client_for(provider, franceconnect_clock_skew=0), *pending_login(provider)) == "id-token-expired"


def pending_login(provider) -> tuple[dict, dict]:
    fc, session = client_for(provider, franceconnect_clock_skew=0), {}
    return session, log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])


def test_pkce_is_required(provider):
    fc, session = client_for(provider), {}
    args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])
    del session[PENDING]["verifier"]
    assert refusal(fc, session, args) == "no-pkce-verifier"

    # the provider itself refuses a code exchanged without its verifier, or a wrong one
    session = {}
    args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])
    exchange = {"grant_type": "authorization_code", "code": args["code"], "redirect_uri": CALLBACK}
    secret = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    answer = requests.post(f"{provider.issuer}/token", data={**exchange, **secret}, timeout=10)
    assert answer.status_code == 400 and "id_token" not in answer.text
    session[PENDING]["verifier"] = "v" * 86
    assert refusal(fc, session, args).startswith("token-endpoint:")

    # and an authorisation request without a code challenge
    url = fc.authorization_url({}, CALLBACK)
    without = re.sub(r"&code_challenge(_method)?=[^&]*", "", url)
    assert requests.get(without, timeout=10).status_code == 400


def test_a_login_the_person_cancels_is_refused(provider):
    fc, session = client_for(provider), {}
    args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"], action="refuse")
    assert args["error"] == "access_denied"
    assert refusal(fc, session, args) == "provider-error:access_denied"


def test_the_token_endpoint_takes_both_client_authentications(provider):
    fc = client_for(provider)
    for use_basic in (False, True):
        session = {}
        args = log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"])
        data = {
            "grant_type": "authorization_code",
            "code": args["code"],
            "redirect_uri": CALLBACK,
            "code_verifier": session[PENDING]["verifier"],
        }
        if use_basic:
            answer = requests.post(f"{provider.issuer}/token", data=data, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10)
        else:
            secret = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
            answer = requests.post(f"{provider.issuer}/token", data={**data, **secret}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["id_token"].count(".") == 2
    wrong = requests.post(
        f"{provider.issuer}/token", data={"grant_type": "authorization_code", "code": "x"}, auth=(CLIENT_ID, "wrong")
    )
    assert wrong.status_code == 401


def test_logout_ends_the_session_at_the_provider(provider):
    fc, session = client_for(provider), {}
    fc.finish(session, log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"]), CALLBACK)
    id_token = session[ID_TOKEN]

    url = fc.logout_url(session, AFTER_LOGOUT)

    query = parse_qs(urlparse(url).query)
    assert url.startswith(f"{provider.issuer}/logout?")
    assert query["id_token_hint"] == [id_token] and query["post_logout_redirect_uri"] == [AFTER_LOGOUT]
    assert len(query["state"][0]) >= 32
    back = requests.get(url, allow_redirects=False, timeout=10)
    assert back.status_code == 302 and back.headers["Location"].startswith(AFTER_LOGOUT + "?state=")
    assert provider.logouts == [ANGELA["sub"]]
    returned = {k: v[0] for k, v in parse_qs(urlparse(back.headers["Location"]).query).items()}
    assert not fc.logout_finished(dict(session), {"state": "x" * 43})
    assert fc.logout_finished(session, returned)
    assert fc.logout_url(session, AFTER_LOGOUT) is None  # no FranceConnect session left


def test_the_provider_refuses_an_unregistered_logout_address(provider):
    fc, session = client_for(provider), {}
    fc.finish(session, log_in(fc.authorization_url(session, CALLBACK), ANGELA["sub"]), CALLBACK)
    url = fc.logout_url(session, "https://elsewhere.example/")
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 400


def test_franceconnect_is_offered_only_with_an_issuer(monkeypatch):
    assert not FranceConnect.offered(Settings())
    monkeypatch.setenv("FRANCECONNECT_ISSUER", "https://fcp-low.sbx.dev-franceconnect.fr/api/v2/")
    monkeypatch.setenv("FRANCECONNECT_CLIENT_ID", "abc")
    monkeypatch.setenv("FRANCECONNECT_ACR", "eidas2")
    settings = Settings.from_env()
    assert FranceConnect.offered(settings)
    assert settings.franceconnect_issuer == "https://fcp-low.sbx.dev-franceconnect.fr/api/v2"
    assert settings.franceconnect_acr == "eidas2" and "birthcountry" in settings.franceconnect_scopes


@pytest.fixture
def callback_server():
    """The portal's callback address as a real server: it answers what it received."""
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    def app(environ, start_response):
        return Response("callback reçu", mimetype="text/plain")(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/portail/franceconnect/callback"
    server.shutdown()


def test_the_login_page_works_in_a_headless_browser(browser, callback_server):
    provider = start_oidc_provider([ANGELA, BORN_ABROAD], CLIENT_ID, CLIENT_SECRET, [callback_server], [AFTER_LOGOUT])
    try:
        fc, session = client_for(provider), {}
        browser.delete_all_cookies()
        browser.get(fc.authorization_url(session, callback_server))
        by_id(browser, "user-1").click()
        by_id(browser, "login").click()
        # the click starts a navigation the driver does not wait for
        wait_for(lambda: browser.current_url.startswith(callback_server + "?"), timeout=15, what="the callback")
        args = {k: v[0] for k, v in parse_qs(urlparse(browser.current_url).query).items()}
        assert fc.finish(session, args, callback_server).sub == BORN_ABROAD["sub"]
    finally:
        provider.stop()


# -- the SI-DEP identity rule --------------------------------------------------------------------------


def person_with_contact(seed: int, **changes):
    rng = random.Random(seed)
    person = make_person(rng, no_contact_rate=0)
    return replace(person, phone=make_phone(rng), birth_place_sent=True, born_abroad=False, **changes)


def identity_of(person, **changes) -> Identity:
    traits = {
        "given_names": " ".join(person.given).split(),
        "family_name": person.family,
        "birthdate": person.birth_date,
        "gender": person.sex,
        "birthplace": person.birth_cog,
        "birthcountry": "99100",
        "sub": "sub",
    }
    return Identity(**{**traits, **changes})


def test_the_same_traits_match_whatever_the_case_and_separators():
    person = person_with_contact(1, family="LE GALL", given=["Jean-Pierre", "Éloïse"], birth_cog="29019")
    identity = identity_of(person, family_name="Le-Gall", given_names=["jean", "pierre", "ÉLOÏSE"])
    assert compare(identity, patient_resource(person)).matches
    assert normalise_name("D’Artagnan  Œuvre") == normalise_name("d'artagnan oeuvre")


def test_one_letter_different_does_not_match():
    person = person_with_contact(2, family="DUBOIS", given=["Claire"])
    match = compare(identity_of(person, family_name="DUBOISE"), patient_resource(person))
    assert not match.matches and match.differs == ["family"] and match.case == "B"


def test_an_accent_is_a_letter():
    person = person_with_contact(3, given=["Céline"])
    match = compare(identity_of(person, given_names=["Celine"]), patient_resource(person))
    assert not match.matches and match.differs == ["given"]


def test_the_full_list_of_given_names_in_order():
    person = person_with_contact(4, given=["Marie", "Anne"])
    assert compare(identity_of(person, given_names=["Anne", "Marie"]), patient_resource(person)).differs == ["given"]
    assert compare(identity_of(person, given_names=["Marie"]), patient_resource(person)).differs == ["given"]


def test_another_birth_date_or_sex_does_not_match():
    person = person_with_contact(5, sex="female")
    patient = patient_resource(person)
    other_day = date.fromordinal(person.birth_date.toordinal() + 1)
    assert compare(identity_of(person, birthdate=other_day), patient).differs == ["birthDate"]
    assert compare(identity_of(person, gender="male"), patient).differs == ["gender"]
    partial = {**patient, "birthDate": person.birth_date.isoformat()[:7]}
    assert compare(identity_of(person), partial).differs == ["birthDate"]


def test_the_birthplace_is_compared_only_when_both_know_it():
    person = person_with_contact(6, birth_cog="69123")
    patient = patient_resource(person)
    assert compare(identity_of(person, birthplace="13055"), patient).differs == ["birthPlace"]
    assert compare(identity_of(person, birthplace=""), patient).matches  # not given by FranceConnect
    unknown = {k: v for k, v in patient.items() if k != "extension"}
    assert compare(identity_of(person, birthplace="13055"), unknown).matches  # not sent by the laboratory
    # born abroad: the country's code against FranceConnect's birthcountry
    abroad = {**patient, "extension": [{"url": BIRTH_PLACE_URL, "valueAddress": {"district": "99350"}}]}
    assert compare(identity_of(person, birthplace="", birthcountry="99350"), abroad).matches
    assert compare(identity_of(person, birthplace="", birthcountry="99109"), abroad).differs == ["birthPlace"]
    assert compare(identity_of(person, birthplace="", birthcountry="99350"), patient).differs == ["birthPlace"]


def test_a_patient_never_notified_is_case_c():
    person = replace(person_with_contact(7), phone=None, email=None)
    match = compare(
        identity_of(person, gender="male" if person.sex == "female" else "female"), patient_resource(person)
    )
    assert match.case == "C"


# -- the Patients of every laboratory ------------------------------------------------------------------


def test_find_patients_across_laboratories(secured):
    a, b = secured.client_session(LAB_A), secured.client_session(LAB_B)
    person = person_with_contact(11, family="Lefèvre", given=["Hélène", "Marie"])
    at_a = post_bundle(a, LAB_A, 21, person=person)["Patient"]
    at_b = post_bundle(b, LAB_B, 22, person=person)["Patient"]
    # at B, a namesake born the same day with another first given name (the laboratory's own
    # matching compares the first one), no INS, no contact
    namesake = replace(person, given=["Louise", "Marie"], ins=None, ins_system=None, phone=None, email=None)
    post_bundle(b, LAB_B, 23, person=namesake)
    post_bundle(a, LAB_A, 24, person=person_with_contact(12))  # someone else

    found = find_patients(secured.store, identity_of(person))
    assert sorted(found.patients) == sorted([at_a, at_b]) and found.case is None

    # an accent missing on the account's side: A's and B's nearly match; nothing of them is given
    found = find_patients(secured.store, identity_of(person, family_name="Lefevre"))
    assert found.patients == [] and found.near_matches == 2 and found.near_differs == ["family"]
    assert found.case == "B"  # notified at A and B: the notification's link works

    found = find_patients(secured.store, identity_of(person, given_names=["Louise", "Marie"]))
    assert len(found.patients) == 1 and found.patients[0] not in (at_a, at_b)

    found = find_patients(secured.store, identity_of(person, birthdate=date(1901, 1, 1)))
    assert found == type(found)([], case="A")

    assert len(find_patients(secured.store, identity_of(person), limit=1).patients) == 1
