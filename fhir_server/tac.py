"""`POST /tac/verify`: the built-in provider's verification of TousAntiCovid declaration codes
(what the app's submission-code server does when the app sends it a code).

The body is a form or JSON `{"code": "..."}`. A known code, valid and not redeemed yet, is
redeemed: 200 `{"valid": true}`; afterwards 409 `{"valid": false}`. An unknown code is 404, an
expired one 410 (both `{"valid": false}`); a body without a code is a 400 OperationOutcome at
`code`. Calls are throttled per client address (DECLARATION_CODE_VERIFY_RATE): 429 beyond, so
that nobody guesses codes. With an external provider (DECLARATION_CODE_PROVIDER_URL), codes are
verified there and this route is 404.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from .declaration_codes import BuiltInCodeProvider, provider_from_settings
from .http import outcome_response
from .outcome import FhirError
from .settings import Settings
from .storage.accounts import utc_now
from .storage.declaration_codes import DeclarationCodes

MAX_CODE_LENGTH = 64


def install(app, settings: Settings) -> None:
    """The provider for `code_for`, and the verification route for the built-in one."""
    provider = provider_from_settings(settings)
    app.extensions["sidep.declaration_codes"] = provider
    app.extensions.setdefault("sidep.clock", utc_now)  # tests set a controlled clock
    if not isinstance(provider, BuiltInCodeProvider):
        return
    bp = Blueprint("tac", __name__)
    limiter = app.extensions["sidep.login_limiter"]  # the web UI's flask-limiter, on the same storage
    view = limiter.limit(settings.declaration_code_verify_rate, scope="tac-verify")(verify)
    bp.add_url_rule("/verify", "verify", view, methods=["POST"])
    app.register_blueprint(bp, url_prefix="/tac")


def _typed_code() -> str:
    body = request.get_json(silent=True) if request.is_json else request.form
    value = body.get("code") if isinstance(body, dict) or hasattr(body, "get") else None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CODE_LENGTH:
        raise FhirError.of(
            400,
            "required",
            f"A declaration code (1 to {MAX_CODE_LENGTH} characters) is required.",
            f"Un code de déclaration (1 à {MAX_CODE_LENGTH} caractères) est requis.",
            "code",
        )
    return value.strip().upper()  # the built-in alphabet is upper case; typed codes may not be


def verify():
    try:
        code = _typed_code()
    except FhirError as error:
        return outcome_response(error)
    now = current_app.extensions["sidep.clock"]()
    records = DeclarationCodes()
    if records.redeem(code, now) is not None:
        return jsonify(valid=True), 200
    known = records.of_code(code)
    if known is None:
        return jsonify(valid=False), 404
    if known.redeemed is None and known.valid_until <= now:
        return jsonify(valid=False), 410
    return jsonify(valid=False), 409
