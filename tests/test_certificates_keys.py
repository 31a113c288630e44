"""Signing keys: development generation (modes, reuse), rotation, production PEM loading, and the
published trust list."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from operations.certificates.examples import example_resources
from operations.certificates.facts import facts_from_resources
from operations.certificates.generate import issue_certificates
from operations.certificates.hcert import decode_and_verify
from operations.certificates.keys import (
    DCC_EKU_RECOVERY,
    DCC_EKU_TEST,
    KeyConfigurationError,
    forget_loaded_keyrings,
    load_keyring,
    rotate_development_dsc,
)
from operations.certificates.trustlist import trust_list
from tests.test_certificates_hcert import verify_with_pycose

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def sign_one(keyring):
    facts = facts_from_resources(**example_resources(sampled_at=NOW - dt.timedelta(hours=2)))
    return issue_certificates(facts, keyring, NOW).dccs[0].hc1


def test_development_keys_are_generated_once_with_private_modes(tmp_path):
    var = tmp_path / "var"
    ring = load_keyring(var, environ={})
    keys = var / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    files = sorted(p.name for p in keys.glob("*.pem"))
    assert files[:2] == ["csca.cert.pem", "csca.key.pem"] and len(files) == 4
    for path in keys.glob("*.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    forget_loaded_keyrings()
    again = load_keyring(var, environ={})
    assert again is not ring and [s.kid for s in again.signers] == [s.kid for s in ring.signers]
    assert load_keyring(var, environ={}) is again  # cached: not read from disk per request


def test_development_dsc_is_signed_by_the_csca_with_dcc_key_usages(tmp_path):
    var = tmp_path / "var"
    signer = load_keyring(var, environ={}).current_signer()
    csca = x509.load_pem_x509_certificate((var / "keys" / "csca.cert.pem").read_bytes())
    signer.certificate.verify_directly_issued_by(csca)
    usages = signer.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {DCC_EKU_TEST, DCC_EKU_RECOVERY}
    assert isinstance(signer.private_key.curve, ec.SECP256R1)


def test_rotation_newest_signs_and_older_still_verifies(tmp_path):
    var = tmp_path / "var"
    old_ring = load_keyring(var, environ={})
    old_hc1 = sign_one(old_ring)
    rotate_development_dsc(var)
    ring = load_keyring(var, environ={})
    assert len(ring.signers) == 2
    assert ring.current_signer().kid == ring.signers[-1].kid != old_ring.current_signer().kid
    published = trust_list(ring)
    assert len(published["certificates"]) == 2
    verify_with_pycose(old_hc1, published)
    new_claims = verify_with_pycose(sign_one(ring), published)
    assert new_claims[1] == "FR"


def _write(path, data: bytes):
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


def _production_pair(tmp_path, name: str, not_before: dt.datetime):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([DCC_EKU_TEST, DCC_EKU_RECOVERY]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path = _write(tmp_path / f"{name}.cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write(
        tmp_path / f"{name}.key.pem",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret-test-only"),
        ),
    )
    return cert_path, key_path


def test_production_keys_come_from_configured_pem_files(tmp_path):
    old_cert, old_key = _production_pair(tmp_path, "dsc-2025", NOW - dt.timedelta(days=200))
    new_cert, new_key = _production_pair(tmp_path, "dsc-2026", NOW - dt.timedelta(days=1))
    environ = {
        "CERT_DSC_CERT_FILES": f"{old_cert}{os.pathsep}{new_cert}",
        "CERT_DSC_KEY_FILE": f"{old_key}{os.pathsep}{new_key}",
        "CERT_DSC_KEY_PASSWORD": "s3cret-test-only",
    }
    ring = load_keyring(tmp_path / "unused-var", environ=environ)
    assert not (tmp_path / "unused-var").exists()  # nothing generated in production mode
    assert ring.current_signer().certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dsc-2026"
    published = trust_list(ring)
    assert len(published["certificates"]) == 2
    hc1 = sign_one(ring)
    assert decode_and_verify(hc1, published, now=NOW).claims[1] == "FR"


def test_production_without_matching_key_fails_at_load(tmp_path):
    cert, _ = _production_pair(tmp_path, "dsc-a", NOW - dt.timedelta(days=1))
    _, other_key = _production_pair(tmp_path, "dsc-b", NOW - dt.timedelta(days=1))
    environ = {
        "CERT_DSC_CERT_FILES": str(cert),
        "CERT_DSC_KEY_FILE": str(other_key),
        "CERT_DSC_KEY_PASSWORD": "s3cret-test-only",
    }
    with pytest.raises(KeyConfigurationError):
        load_keyring(tmp_path / "var", environ=environ)


def test_trust_list_entries(tmp_path):
    ring = load_keyring(tmp_path / "var", environ={})
    published = trust_list(ring)
    [(kid, entry)] = published["certificates"].items()
    der = base64.b64decode(entry["certificate"])
    assert base64.b64decode(kid) == ring.current_signer().kid
    assert x509.load_der_x509_certificate(der) == ring.current_signer().certificate
    assert entry["country"] == "FR" and entry["keyUsage"] == ["test", "recovery"]
    assert dt.datetime.fromisoformat(entry["notBefore"]) < NOW < dt.datetime.fromisoformat(entry["notAfter"])
    assert "PRIVATE" not in str(published)
