"""Document Signer keys for HCERT (EU DCC) signatures, and the ring of active ones.

Development (default): at first use, under `<var_dir>/keys/` (directory mode 0700, files 0600):
  - `csca.key.pem`, `csca.cert.pem`: a self-signed Country Signing CA, P-256, 10 years;
  - `dsc-<UTC timestamp>.key.pem`, `dsc-<UTC timestamp>.cert.pem`: a Document Signer Certificate
    signed by that CSCA, P-256, 2 years, with the DCC extended key usages for test (…1.1) and
    recovery (…1.3) certificates only: this service never issues vaccination certificates (…1.2).
  `rotate_development_dsc(var_dir)` adds a new DSC: it signs from then on, the older ones stay in
  the trust list. These keys are marked NOT FOR PRODUCTION in their subject and never leave var/.

Production: set these environment variables (then nothing is generated):
  - `CERT_DSC_CERT_FILES`: PEM files holding the DSC certificates still to be trusted, separated
    by os.pathsep (":"); a file may hold several certificates;
  - `CERT_DSC_KEY_FILE`: PEM private key file(s) of the signing DSC(s), separated by os.pathsep;
  - `CERT_DSC_KEY_PASSWORD` (optional): the password of encrypted key files.
Several DSCs may be active (rotation): the newest (latest notBefore) currently valid certificate
whose private key is loaded signs; every listed certificate is published in the trust list.

Keys are loaded once per (var_dir, settings) and kept in a KeyRing: never read from disk per request.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DCC_EKU_TEST = x509.ObjectIdentifier("1.3.6.1.4.1.1847.2021.1.1")
DCC_EKU_VACCINATION = x509.ObjectIdentifier("1.3.6.1.4.1.1847.2021.1.2")
DCC_EKU_RECOVERY = x509.ObjectIdentifier("1.3.6.1.4.1.1847.2021.1.3")
ENV_CERT_FILES = "CERT_DSC_CERT_FILES"
ENV_KEY_FILE = "CERT_DSC_KEY_FILE"
ENV_KEY_PASSWORD = "CERT_DSC_KEY_PASSWORD"
DEV_ORGANISATION = "SI-DEP development - NOT FOR PRODUCTION"
CSCA_VALIDITY = dt.timedelta(days=3650)
DSC_VALIDITY = dt.timedelta(days=730)


class KeyConfigurationError(RuntimeError):
    """No usable signing key: configuration files missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class DocumentSigner:
    certificate: x509.Certificate
    der: bytes
    kid: bytes  # first 8 bytes of SHA-256 of the DER certificate
    private_key: ec.EllipticCurvePrivateKey | None = None

    @classmethod
    def of(cls, certificate: x509.Certificate, private_key=None) -> "DocumentSigner":
        der = certificate.public_bytes(serialization.Encoding.DER)
        return cls(certificate, der, kid_of(der), private_key)

    def valid_at(self, when: dt.datetime) -> bool:
        cert = self.certificate
        return cert.not_valid_before_utc <= when <= cert.not_valid_after_utc


def kid_of(certificate_der: bytes) -> bytes:
    return hashlib.sha256(certificate_der).digest()[:8]


class KeyRing:
    """The active DSCs: all of them verify (trust list), the newest valid one with a key signs."""

    def __init__(self, signers: list[DocumentSigner]):
        if not signers:
            raise KeyConfigurationError("no Document Signer Certificate configured")
        self.signers = sorted(signers, key=lambda s: s.certificate.not_valid_before_utc)
        self.by_kid = {s.kid: s for s in self.signers}

    def current_signer(self, now: dt.datetime | None = None) -> DocumentSigner:
        now = now or dt.datetime.now(dt.UTC)
        usable = [s for s in self.signers if s.private_key is not None and s.valid_at(now)]
        if not usable:
            raise KeyConfigurationError("no currently valid DSC with its private key")
        return usable[-1]


# ---- loading ----------------------------------------------------------------------------------

_cache: dict[tuple, KeyRing] = {}
_cache_lock = threading.Lock()


def load_keyring(var_dir: str | os.PathLike = "var", environ=None) -> KeyRing:
    """The KeyRing for these settings, loaded (and in development generated) once per process."""
    environ = os.environ if environ is None else environ
    settings = tuple(environ.get(name) for name in (ENV_CERT_FILES, ENV_KEY_FILE, ENV_KEY_PASSWORD))
    cache_key = (str(Path(var_dir).resolve()), settings)
    with _cache_lock:
        ring = _cache.get(cache_key)
        if ring is None:
            if settings[0]:
                ring = _load_production(*settings)
            else:
                ring = _load_development(Path(var_dir) / "keys")
            _cache[cache_key] = ring
        return ring


def forget_loaded_keyrings() -> None:
    """Drop cached key rings (after a rotation), so that the next load reads the files again."""
    with _cache_lock:
        _cache.clear()


def _split_paths(value: str | None) -> list[Path]:
    return [Path(p) for p in (value or "").split(os.pathsep) if p.strip()]


def _read_certificates(paths: list[Path]) -> list[x509.Certificate]:
    certificates = []
    for path in paths:
        try:
            certificates.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except (OSError, ValueError) as error:
            raise KeyConfigurationError(f"cannot read DSC certificate file {path}: {error}") from error
    return certificates


def _read_private_keys(paths: list[Path], password: str | None) -> list:
    keys = []
    for path in paths:
        try:
            keys.append(serialization.load_pem_private_key(path.read_bytes(), password.encode() if password else None))
        except (OSError, ValueError, TypeError) as error:
            raise KeyConfigurationError(f"cannot read DSC key file {path}: {error}") from error
    return keys


def _public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pair(certificates: list[x509.Certificate], private_keys: list) -> list[DocumentSigner]:
    keys_by_public = {_public_der(k.public_key()): k for k in private_keys}
    for key in private_keys:
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise KeyConfigurationError("DSC keys must be ECDSA P-256 (COSE alg ES256)")
    return [DocumentSigner.of(c, keys_by_public.get(_public_der(c.public_key()))) for c in certificates]


def _load_production(cert_files: str, key_files: str | None, password: str | None) -> KeyRing:
    certificates = _read_certificates(_split_paths(cert_files))
    ring = KeyRing(_pair(certificates, _read_private_keys(_split_paths(key_files), password)))
    ring.current_signer()  # fail at start, not at the first request
    return ring


# ---- development keys -------------------------------------------------------------------------


def _load_development(keys_dir: Path) -> KeyRing:
    with _locked(keys_dir):
        if not (keys_dir / "csca.cert.pem").exists():
            _write_csca(keys_dir)
        if not list(keys_dir.glob("dsc-*.cert.pem")):
            _write_dsc(keys_dir)
        return _read_development(keys_dir)


def _read_development(keys_dir: Path) -> KeyRing:
    cert_paths = sorted(keys_dir.glob("dsc-*.cert.pem"))
    key_paths = [p.with_name(p.name.replace(".cert.pem", ".key.pem")) for p in cert_paths]
    return KeyRing(_pair(_read_certificates(cert_paths), _read_private_keys(key_paths, None)))


def rotate_development_dsc(var_dir: str | os.PathLike = "var") -> Path:
    """Add a new development DSC (it becomes the signer); returns its certificate path."""
    keys_dir = Path(var_dir) / "keys"
    load_keyring(var_dir, environ={})  # make sure the CSCA exists
    with _locked(keys_dir):
        path = _write_dsc(keys_dir)
    forget_loaded_keyrings()
    return path


def private_secret(path: str | os.PathLike, size: int = 32) -> bytes:
    """A random secret kept in `path` (mode 0600), made at first use; processes starting together
    all read the one that was written first."""
    path = Path(path)
    if not path.exists():
        with _locked(path.parent):
            if not path.exists():
                _write_private(path, secrets.token_bytes(size))
    return path.read_bytes()


@contextmanager
def _locked(keys_dir: Path):
    """Serialise key generation between processes (several gunicorn workers start together)."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    with open(keys_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_csca(keys_dir: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("SI-DEP DEV CSCA")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CSCA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(keys_dir / "csca.key.pem", _pem_key(key))
    _write_private(keys_dir / "csca.cert.pem", certificate.public_bytes(serialization.Encoding.PEM))


def _write_dsc(keys_dir: Path) -> Path:
    csca_key = serialization.load_pem_private_key((keys_dir / "csca.key.pem").read_bytes(), None)
    csca = x509.load_pem_x509_certificate((keys_dir / "csca.cert.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(f"SI-DEP DEV DSC {stamp}"))
        .issuer_name(csca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + DSC_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([DCC_EKU_TEST, DCC_EKU_RECOVERY]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(csca_key.public_key()), critical=False)
        .sign(csca_key, hashes.SHA256())
    )
    cert_path = keys_dir / f"dsc-{stamp}.cert.pem"
    _write_private(keys_dir / f"dsc-{stamp}.key.pem", _pem_key(key))
    _write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path
