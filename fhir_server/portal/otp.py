"""The one-time codes: derived, never stored.

A code is HMAC(key, record id, issue counter) reduced to 6 digits: the web process that issues
it and the job that sends it (given the record id only) both compute it, and the record keeps a
keyed hash of it, which is what an answer is checked against. The key is OTP_KEY_FILE, else one
generated under VAR_DIR/keys (every web and worker process must share it).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from operations.certificates.keys import private_secret

from ..settings import Settings

DIGITS = 6


def otp_key(settings: Settings) -> bytes:
    path = Path(settings.otp_key_file or Path(settings.var_dir) / "keys" / "otp.key")
    return private_secret(path)


def otp_code(key: bytes, otp_id: str, counter: int) -> str:
    digest = hmac.new(key, f"otp\n{otp_id}\n{counter}".encode(), hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**DIGITS:0{DIGITS}d}"


def otp_hash(key: bytes, otp_id: str, counter: int, code: str) -> str:
    """What the record keeps of a code: keyed, so that its 10^6 values cannot be tried offline."""
    return hmac.new(key, f"otp-check\n{otp_id}\n{counter}\n{code}".encode(), hashlib.sha256).hexdigest()


def well_formed(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def sms_text(code: str, minutes: int) -> str:
    """One GSM-7 SMS (checked by the tests), no name, no result."""
    return f"SI-DEP : votre code de connexion est {code} (valable {minutes} minutes). Ne le communiquez à personne."


EMAIL_SUBJECT = "SI-DEP : votre code de connexion / your sign-in code"
EMAIL_BODY = """\
Bonjour,

Votre code de connexion au portail SI-DEP est : {code}

Il est valable {minutes} minutes, une seule fois. Ne le communiquez à personne : aucun
service ne vous le demandera. Si vous n'avez pas demandé ce code, ignorez ce message.

-----

Hello,

Your sign-in code for the SI-DEP portal is: {code}

It is valid for {minutes} minutes, once. Do not share it with anyone: no service will ask you
for it. If you did not ask for this code, ignore this message.
"""
