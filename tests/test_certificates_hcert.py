"""HCERT: ICAO names, UVCI, schema validation, signature and encoding, checked with independent
code (pycose, the base45 package, jsonschema) and the official DCC test vectors."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import os
import zlib
from pathlib import Path

import base45
import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pycose.keys import CoseKey
from pycose.messages import Sign1Message

from operations.certificates import hcert
from operations.certificates.dcc_schema import DccPayloadError, reference_validator, validate_payload
from operations.certificates.examples import example_resources
from operations.certificates.facts import facts_from_resources
from operations.certificates.generate import issue_certificates
from operations.certificates.icao import transliterate
from operations.certificates.keys import load_keyring
from operations.certificates.trustlist import trust_list
from operations.certificates.uvci import has_valid_check_character, luhn_mod_n_check_character, uvci_for

VECTORS = Path(__file__).parent / "data" / "dcc-vectors"


def verify_with_pycose(hc1: str, published: dict) -> dict:
    """Independent verifier: base45 package, zlib, pycose, and only the published trust list.
    Returns the CWT claims; raises if the signature does not verify."""
    assert hc1.startswith("HC1:")
    cose = cbor2.loads(zlib.decompress(base45.b45decode(hc1[4:])))
    assert isinstance(cose, cbor2.CBORTag) and cose.tag == 18
    # pycose 1.1's Sign1Message.decode expects cbor2 < 6 (arrays inside tags as lists, cbor2 6
    # gives tuples and immutable maps): hand it the decoded array with a plain dict as the
    # unprotected header; header parsing and signature verification stay pycose's.
    protected, unprotected, payload, signature = cose.value
    message = Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)
    kid = message.phdr[next(k for k in message.phdr if getattr(k, "identifier", k) == 4)]
    entry = published["certificates"][base64.b64encode(kid).decode()]
    certificate = x509.load_der_x509_certificate(base64.b64decode(entry["certificate"]))
    assert hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()[:8] == kid
    pem = certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    message.key = CoseKey.from_pem_public_key(pem.decode())
    if not message.verify_signature():
        raise AssertionError("pycose: signature does not verify")
    return cbor2.loads(message.payload)


def vector(name: str) -> dict:
    return json.loads((VECTORS / f"{name}.json").read_text())


def vector_trust_list(data: dict) -> dict:
    der = base64.b64decode(data["TESTCTX"]["CERTIFICATE"])
    kid = base64.b64encode(hashlib.sha256(der).digest()[:8]).decode()
    return {"certificates": {kid: {"certificate": data["TESTCTX"]["CERTIFICATE"]}}}


def vector_clock(data: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(data["TESTCTX"]["VALIDATIONCLOCK"])


@pytest.fixture
def keyring(tmp_path):
    return load_keyring(tmp_path / "var", environ={})


# ---- ICAO 9303 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Lefèvre-Dubois", "LEFEVRE<DUBOIS"),
        ("N'Diaye", "NDIAYE"),
        ("Œuvray", "OEUVRAY"),
        ("Françoise-Hélène", "FRANCOISE<HELENE"),
        ("Jean  Marie", "JEAN<MARIE"),
        ("Müller", "MUELLER"),
        ("Strauß", "STRAUSS"),
        ("Ægir Ørsted", "AEGIR<OERSTED"),
        ("d'Červenková Panklová", "DCERVENKOVA<PANKLOVA"),  # the DCC schema's own example
    ],
)
def test_icao_transliteration(name, expected):
    assert transliterate(name) == expected


def test_non_latin_name_has_no_transliteration():
    assert transliterate("ناصر") == ""


# ---- UVCI --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["FR_DCC_Test_0011", "FR_DCC_Test_0013", "FR_DCC_Test_0014", "FR_DCC_Test_0017"])
def test_uvci_checksum_matches_official_french_vectors(name):
    ci = vector(name)["JSON"]["t"][0]["ci"]
    body, check = ci.split("#")
    assert luhn_mod_n_check_character(body) == check
    assert has_valid_check_character(ci)


def test_uvci_is_stable_per_version_and_distinct_otherwise():
    first = uvci_for("DiagnosticReport/a/_history/3", "test")
    assert first == uvci_for("DiagnosticReport/a/_history/3", "test")
    assert first != uvci_for("DiagnosticReport/a/_history/4", "test")
    assert first != uvci_for("DiagnosticReport/a/_history/3", "recovery")
    assert first.startswith("URN:UVCI:01:FR:") and has_valid_check_character(first)
    assert len(first) <= 72


def test_uvci_check_detects_a_changed_character():
    uvci = uvci_for("DiagnosticReport/a/_history/1", "test")
    body, check = uvci.split("#")
    changed = body[:-1] + ("A" if body[-1] != "A" else "B")
    assert not has_valid_check_character(f"{changed}#{check}")


# ---- schema ------------------------------------------------------------------------------------


def test_fast_and_reference_validators_agree_on_mutations():
    valid = vector("FR_DCC_Test_0011")["JSON"]
    mutations = {
        "bad dob": lambda p: p.update(dob="1899-01-01"),
        "partial dob": lambda p: p.update(dob="1985-03"),
        "lowercase fnt": lambda p: p["nam"].update(fnt="Test"),
        "no names": lambda p: p.update(nam={"fn": "X"}),
        "bad sc": lambda p: p["t"][0].update(sc="2021-13-40T10:00:00Z"),
        "sc without zone": lambda p: p["t"][0].update(sc="2021-04-13T14:20:00"),
        "unknown tt": lambda p: p["t"][0].update(tt="LP0000-0"),
        "unknown tr": lambda p: p["t"][0].update(tr="419984006"),
        "unknown ma": lambda p: p["t"][0].update(ma="99999"),
        "t and r": lambda p: p.update(r=[{"tg": "840539006"}]),
        "long tc": lambda p: p["t"][0].update(tc="x" * 81),
        "missing ci": lambda p: p["t"][0].pop("ci"),
    }
    for label, mutate in mutations.items():
        payload = copy.deepcopy(valid)
        mutate(payload)
        reference_ok = not list(reference_validator().iter_errors(payload))
        try:
            validate_payload(payload)
            fast_ok = True
        except DccPayloadError:
            fast_ok = False
        assert fast_ok == reference_ok, label
    validate_payload(valid)


def test_fast_validator_names_the_failing_field():
    payload = copy.deepcopy(vector("FR_DCC_Test_0011")["JSON"])
    payload["t"][0]["tc"] = "x" * 81
    with pytest.raises(DccPayloadError) as error:
        validate_payload(payload)
    assert error.value.problems[0][0] == "t[0].tc"
    payload = copy.deepcopy(vector("FR_DCC_Test_0011")["JSON"])
    payload["t"][0]["tt"] = "LP0000-0"
    with pytest.raises(DccPayloadError) as error:
        validate_payload(payload)
    assert error.value.problems == [("t[0].tt", "'LP0000-0' is not in the DCC value set")]


def test_fast_and_reference_validators_agree_on_recovery_mutations(keyring):
    now = dt.datetime.now(dt.UTC)
    facts = facts_from_resources(**example_resources(result="detected", sampled_at=now - dt.timedelta(days=20)))
    valid = issue_certificates(facts, keyring, now).dcc("recovery").payload
    mutations = {
        "bad df": lambda p: p["r"][0].update(df="2021-02-30"),
        "du as date-time": lambda p: p["r"][0].update(du="2021-06-01T00:00:00Z"),
        "unknown tg": lambda p: p["r"][0].update(tg="123"),
        "unknown co": lambda p: p["r"][0].update(co="XX"),
        "long is": lambda p: p["r"][0].update(**{"is": "x" * 81}),
        "missing fr": lambda p: p["r"][0].pop("fr"),
        "two entries": lambda p: p["r"].append(dict(p["r"][0])),
        "lowercase gnt": lambda p: p["nam"].update(gnt="x"),
    }
    for label, mutate in mutations.items():
        payload = copy.deepcopy(valid)
        mutate(payload)
        reference_ok = not list(reference_validator().iter_errors(payload))
        try:
            validate_payload(payload)
            fast_ok = True
        except DccPayloadError:
            fast_ok = False
        assert fast_ok == reference_ok is False, label
    validate_payload(valid)


def test_generated_payloads_pass_the_reference_validator(keyring):
    now = dt.datetime.now(dt.UTC)
    for kind, result, days in [
        ("naat", "not-detected", 1),
        ("antigen", "not-detected", 1),
        ("naat", "detected", 20),
        ("antigen", "detected", 30),
    ]:
        resources = example_resources(kind=kind, result=result, sampled_at=now - dt.timedelta(days=days))
        certificates = issue_certificates(facts_from_resources(**resources), keyring, now)
        assert certificates.dccs
        for dcc in certificates.dccs:
            assert not list(reference_validator().iter_errors(dcc.payload)), dcc.payload


# ---- signing and encoding ------------------------------------------------------------------------


def test_base45_encoder_matches_the_reference_package():
    for length in list(range(0, 40)) + [329, 330, 1001]:
        data = os.urandom(length)
        assert hcert.b45encode(data) == base45.b45encode(data).decode()
    # Every 2-byte value (the lane arithmetic's whole domain) and the extreme single bytes.
    every_pair = bytes(b for n in range(1 << 16) for b in n.to_bytes(2, "big"))
    assert hcert.b45encode(every_pair) == base45.b45encode(every_pair).decode()
    for data in (b"\xff" * 431, b"\x00" * 431, b"\xff", b"\x00"):
        assert hcert.b45encode(data) == base45.b45encode(data).decode()


def test_raw_signature_reads_der_like_cryptography():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = ec.generate_private_key(ec.SECP256R1())
    for index in range(2000):  # short r/s (leading zero bytes dropped) come up about 1 in 128
        der = key.sign(b"%d" % index, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        assert hcert._raw_signature(der) == r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_cose_message_is_the_plain_cbor_encoding_of_its_parts(keyring):
    """The precomputed framing gives byte for byte what cbor2 encodes for the whole structure."""
    now = dt.datetime.now(dt.UTC)
    facts = facts_from_resources(**example_resources(sampled_at=now - dt.timedelta(hours=3)))
    payload = issue_certificates(facts, keyring, now).dccs[0].payload
    claims = hcert.cwt_claims(payload, now, now + dt.timedelta(hours=72))
    cose = hcert.sign_cose(claims, keyring.current_signer())
    message = cbor2.loads(cose)
    assert message.tag == 18 and message.value[1] == {} and message.value[2] == claims
    assert cbor2.dumps(message) == cose


def test_zlib_step_equals_zlib_level_9(keyring):
    """Same bytes as zlib.compress(data, 9) (header 0x78 0xDA included) for DCC-sized messages,
    and a valid zlib stream for any size."""
    now = dt.datetime.now(dt.UTC)
    signer = keyring.current_signer()
    for result, days in (("not-detected", 1), ("detected", 20)):
        facts = facts_from_resources(
            **example_resources(
                result=result,
                family="MARTIN",
                given=("MARTIN",),  # repeats: LZ77 matches
                sampled_at=now - dt.timedelta(days=days),
            )
        )
        for dcc in issue_certificates(facts, keyring, now).dccs:
            cose = hcert.sign_cose(hcert.cwt_claims(dcc.payload, now, dcc.expires_at), signer)
            assert hcert.zlib_compress(cose) == zlib.compress(cose, 9)
    text = b"URN:UVCI:01:FR:LABORATOIRE SYNTHETIQUE " * 60
    for length in (0, 1, 100, 700, 1786, 1787, 2400):
        data = text[: length // 2] + os.urandom(length - length // 2)
        assert zlib.decompress(hcert.zlib_compress(data)) == data
        if length <= 1786:
            assert hcert.zlib_compress(data) == zlib.compress(data, 9)


def test_signed_certificate_verifies_with_pycose_and_published_trust_list(keyring):
    now = dt.datetime.now(dt.UTC)
    facts = facts_from_resources(**example_resources(sampled_at=now - dt.timedelta(hours=30)))
    dcc = issue_certificates(facts, keyring, now).dccs[0]
    published = json.loads(json.dumps(trust_list(keyring)))  # as served: plain JSON
    claims = verify_with_pycose(dcc.hc1, published)
    assert claims[1] == "FR"
    assert claims[6] == int(now.timestamp())
    assert claims[4] == int((now - dt.timedelta(hours=30) + dt.timedelta(hours=72)).timestamp())  # from sampling
    assert claims[-260][1] == dcc.payload
    assert not list(reference_validator().iter_errors(claims[-260][1]))
    verified = hcert.decode_and_verify(dcc.hc1, published)
    assert verified.payload == dcc.payload


def test_cose_structure_has_es256_and_kid_in_protected_header(keyring):
    now = dt.datetime.now(dt.UTC)
    facts = facts_from_resources(**example_resources(sampled_at=now - dt.timedelta(hours=3)))
    hc1 = issue_certificates(facts, keyring, now).dccs[0].hc1
    message = cbor2.loads(zlib.decompress(base45.b45decode(hc1[4:])))
    assert isinstance(message, cbor2.CBORTag) and message.tag == 18
    protected, unprotected, _, signature = message.value
    signer = keyring.current_signer()
    assert cbor2.loads(protected) == {1: -7, 4: signer.kid}
    assert signer.kid == hashlib.sha256(signer.der).digest()[:8]
    assert len(signature) == 64 and not unprotected


def test_tampering_with_one_byte_fails_verification(keyring):
    now = dt.datetime.now(dt.UTC)
    facts = facts_from_resources(**example_resources(sampled_at=now - dt.timedelta(hours=3)))
    hc1 = issue_certificates(facts, keyring, now).dccs[0].hc1
    published = trust_list(keyring)
    cose = bytearray(zlib.decompress(base45.b45decode(hc1[4:])))
    index = cose.index(b"Lef")  # a byte of the family name inside the signed payload
    cose[index] ^= 0x01
    tampered = "HC1:" + base45.b45encode(zlib.compress(bytes(cose))).decode()
    with pytest.raises(hcert.HcertVerificationError) as error:
        hcert.decode_and_verify(tampered, published)
    assert error.value.reason == "signature"
    with pytest.raises(AssertionError, match="pycose: signature does not verify"):
        verify_with_pycose(tampered, published)


def test_unknown_signer_is_rejected(keyring, tmp_path):
    now = dt.datetime.now(dt.UTC)
    facts = facts_from_resources(**example_resources(sampled_at=now - dt.timedelta(hours=3)))
    hc1 = issue_certificates(facts, keyring, now).dccs[0].hc1
    other = load_keyring(tmp_path / "other-var", environ={})
    with pytest.raises(hcert.HcertVerificationError) as error:
        hcert.decode_and_verify(hc1, trust_list(other))
    assert error.value.reason == "kid"


def test_expired_certificate_is_rejected_by_the_verifier(keyring):
    now = dt.datetime.now(dt.UTC)
    facts = facts_from_resources(**example_resources(sampled_at=now - dt.timedelta(hours=3)))
    hc1 = issue_certificates(facts, keyring, now).dccs[0].hc1
    with pytest.raises(hcert.HcertVerificationError) as error:
        hcert.decode_and_verify(hc1, trust_list(keyring), now=now + dt.timedelta(hours=73))
    assert error.value.reason == "expired"


def test_invalid_payload_is_never_signed(keyring):
    payload = copy.deepcopy(vector("FR_DCC_Test_0011")["JSON"])
    payload["t"][0]["tr"] = "419984006"  # inconclusive: not a DCC test result
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(DccPayloadError):
        hcert.issue_hcert(payload, keyring.current_signer(), now, now + dt.timedelta(hours=1))


# ---- official vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["FR_DCC_Test_0011", "FR_DCC_Test_0013", "FR_DCC_Test_0014", "FR_DCC_Test_0017"])
def test_official_french_vectors_verify_at_their_clock(name):
    data = vector(name)
    verified = hcert.decode_and_verify(data["PREFIX"], vector_trust_list(data), now=vector_clock(data))
    assert verified.payload == data["JSON"]
    assert verified.claims[1] == "FR"


@pytest.mark.parametrize(
    "name, reason",
    [("common_CO5", "signature"), ("common_CO8", "key-usage"), ("common_CO17", "expired"), ("common_Z1", "zlib")],
)
def test_official_invalid_vectors_are_rejected(name, reason):
    data = vector(name)
    with pytest.raises(hcert.HcertVerificationError) as error:
        hcert.decode_and_verify(data["PREFIX"], vector_trust_list(data), now=vector_clock(data))
    assert error.value.reason == reason


def test_our_encoder_reproduces_the_official_compressed_to_base45_step():
    data = vector("FR_DCC_Test_0011")
    compressed = bytes.fromhex(data["COMPRESSED"])
    assert hcert.b45encode(compressed) == data["BASE45"]
