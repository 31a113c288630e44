"""TousAntiCovid declaration codes: one single-use code per positive result, from a real local
submission-code server over HTTP or from the built-in provider, and its verification endpoint."""

from __future__ import annotations

import io
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from pyzbar.pyzbar import ZBarSymbol, decode

from fhir_server import create_app
from fhir_server.code_server import start_code_server
from fhir_server.declaration_codes import (
    CODE_ALPHABET,
    BuiltInCodeProvider,
    CodeProviderError,
    HttpCodeProvider,
    app_link,
    code_for,
    provider_from_settings,
    qr_code_png,
    retention_end,
)
from fhir_server.storage.declaration_codes import DeclarationCodes

SAMPLED = datetime(2024, 3, 4, 9, 30, tzinfo=UTC)


@pytest.fixture
def code_server():
    server = start_code_server(credentials=("sidep", "s3cret"))
    yield server
    server.stop()


@pytest.fixture
def http_provider(code_server):
    return HttpCodeProvider(code_server.url, "sidep", "s3cret", timeout=5)


def expiry(settings):
    return retention_end(settings, SAMPLED)


def test_retention_end_is_the_results_retention_after_sampling(settings):
    assert retention_end(settings, SAMPLED) == datetime(2024, 6, 4, 9, 30)
    assert retention_end(settings.but(result_retention_months=1), SAMPLED) == datetime(2024, 4, 4, 9, 30)


def test_http_provider_gives_one_code_per_positive_result(app, settings, code_server, http_provider):
    with app.app_context():
        first = code_for("r1", "p1", ["org-a"], expiry(settings), provider=http_provider)
        again = code_for("r1", "p1", ["org-a"], expiry(settings), provider=http_provider)
        other = code_for("r2", "p1", ["org-a"], expiry(settings), provider=http_provider)
    assert first.code == again.code and first.code in code_server.codes()
    assert code_server.requests == 2  # the second call for r1 asked nothing of the server
    assert other.code != first.code
    assert first.provider == "http" and first.owners == ["org-a"] and first.patient == "p1"
    assert first.expires == datetime(2024, 6, 4, 9, 30) and first.redeemed is None


def test_the_servers_shorter_validity_is_kept(app, settings, code_server, http_provider):
    code_server.max_validity = timedelta(days=7)
    with app.app_context():
        record = code_for("r1", "p1", [], datetime.now(UTC) + timedelta(days=90), provider=http_provider)
    assert record.valid_until < datetime.now(UTC).replace(tzinfo=None) + timedelta(days=8)
    assert record.expires > record.valid_until  # the record stays for the result's retention


def test_concurrent_first_calls_give_the_same_code(app, settings, http_provider):
    got, errors = [], []

    def ask():
        try:
            with app.app_context():
                got.append(code_for("r1", "p1", [], expiry(settings), provider=http_provider).code)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(got) == 8 and len(set(got)) == 1
    with app.app_context():
        assert DeclarationCodes().of_report("r1").code == got[0]


@pytest.mark.parametrize("status", [500, 503, 400])
def test_server_errors_are_a_clear_exception_and_store_nothing(app, settings, code_server, http_provider, status):
    code_server.fail_next(status)
    with app.app_context():
        with pytest.raises(CodeProviderError, match=f"HTTP {status}") as raised:
            code_for("r1", "p1", [], expiry(settings), provider=http_provider)
        assert "TousAntiCovid" in raised.value.reason
        assert DeclarationCodes().of_report("r1") is None
        assert code_for("r1", "p1", [], expiry(settings), provider=http_provider).code in code_server.codes()


def test_wrong_credentials_and_an_unreachable_server_are_clear(app, settings, code_server):
    with app.app_context():
        with pytest.raises(CodeProviderError, match="HTTP 401"):
            code_for("r1", "p1", [], expiry(settings), provider=HttpCodeProvider(code_server.url, "sidep", "wrong"))
        stopped = start_code_server()
        url = stopped.url
        stopped.stop()
        with pytest.raises(CodeProviderError, match="injoignable"):
            code_for("r1", "p1", [], expiry(settings), provider=HttpCodeProvider(url, timeout=2))


def test_an_unreadable_answer_is_refused(app, settings):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotJson(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), NotJson)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        provider = HttpCodeProvider(f"http://127.0.0.1:{http.server_address[1]}/", timeout=5)
        with app.app_context(), pytest.raises(CodeProviderError, match="illisible"):
            code_for("r1", "p1", [], expiry(settings), provider=provider)
    finally:
        http.shutdown()
        http.server_close()


def test_settings_choose_the_provider(settings, code_server):
    assert isinstance(provider_from_settings(settings), BuiltInCodeProvider)
    chosen = provider_from_settings(settings.but(declaration_code_provider_url=code_server.url))
    assert isinstance(chosen, HttpCodeProvider) and chosen.url == code_server.url


def test_the_app_uses_the_configured_server(settings, code_server):
    app = create_app(
        settings.but(
            declaration_code_provider_url=code_server.url,
            declaration_code_provider_user="sidep",
            declaration_code_provider_password="s3cret",
        )
    )
    with app.app_context():
        record = code_for("r1", "p1", [], expiry(settings))
    assert record.code in code_server.codes()
    # codes of an external server are verified there: no local verification route
    assert app.test_client().post("/tac/verify", json={"code": record.code}).status_code == 404


def test_built_in_codes_are_12_unambiguous_characters_never_repeated(app, settings):
    with app.app_context():
        codes = [code_for(f"r{i}", "p1", [], expiry(settings)).code for i in range(50)]
        assert code_for("r7", "p1", [], expiry(settings)).code == codes[7]
    assert len(set(codes)) == 50
    assert all(re.fullmatch(f"[{CODE_ALPHABET}]{{12}}", code) for code in codes)
    assert not set("01OIL") & set(CODE_ALPHABET)


def test_a_provider_repeating_a_code_never_gives_it_to_a_second_result(app, settings):
    class Repeating(BuiltInCodeProvider):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def new_code(self, valid_until):
            self.calls += 1
            issued = super().new_code(valid_until)
            return issued if self.calls > 2 else type(issued)("AAAAAAAAAAAA", issued.valid_until)

    provider = Repeating()
    with app.app_context():
        first = code_for("r1", "p1", [], expiry(settings), provider=provider)
        second = code_for("r2", "p1", [], expiry(settings), provider=provider)
    assert first.code == "AAAAAAAAAAAA" and second.code != first.code and provider.calls == 3


def test_the_qr_code_carries_the_apps_link(app, settings):
    with app.app_context():
        code = code_for("r1", "p1", [], expiry(settings)).code
    png = qr_code_png(code)
    [symbol] = decode(Image.open(io.BytesIO(png)), symbols=[ZBarSymbol.QRCODE])
    assert symbol.data.decode() == app_link(code) and app_link(code).endswith("/" + code)


# -- POST /tac/verify ---------------------------------------------------------------------------------
def _built_in_code(app, report="r1", expires=None) -> str:
    with app.app_context():
        return code_for(report, "p1", [], expires or datetime.now(UTC) + timedelta(days=30)).code


def test_a_code_is_redeemed_once(app):
    code = _built_in_code(app)
    http = app.test_client()
    first = http.post("/tac/verify", json={"code": code})
    assert first.status_code == 200 and first.get_json() == {"valid": True}
    again = http.post("/tac/verify", data={"code": code})  # a form works as well
    assert again.status_code == 409 and again.get_json() == {"valid": False}
    with app.app_context():
        assert DeclarationCodes().of_code(code).redeemed is not None


def test_a_code_typed_in_lower_case_is_the_same_code(app):
    code = _built_in_code(app)
    assert app.test_client().post("/tac/verify", json={"code": f" {code.lower()} "}).status_code == 200


def test_an_unknown_code_is_404(app):
    _built_in_code(app)
    answer = app.test_client().post("/tac/verify", json={"code": "ZZZZZZZZZZZZ"})
    assert answer.status_code == 404 and answer.get_json() == {"valid": False}


def test_an_expired_code_is_410_by_the_apps_clock(app):
    code = _built_in_code(app, expires=datetime(2024, 6, 4, 9, 30, tzinfo=UTC))
    http = app.test_client()
    app.extensions["sidep.clock"] = lambda: datetime(2024, 6, 4, 9, 31)
    answer = http.post("/tac/verify", json={"code": code})
    assert answer.status_code == 410 and answer.get_json() == {"valid": False}
    app.extensions["sidep.clock"] = lambda: datetime(2024, 6, 4, 9, 29)
    assert http.post("/tac/verify", json={"code": code}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"code": ""}, {"code": 12}, {"code": "A" * 65}, ["code"]],
)
def test_a_body_without_a_code_is_a_400_operation_outcome(app, body):
    answer = app.test_client().post("/tac/verify", json=body)
    assert answer.status_code == 400
    outcome = answer.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["code"]


def test_verification_is_rate_limited_per_address(settings):
    app = create_app(settings.but(declaration_code_verify_rate="3 per minute"))
    http = app.test_client()
    statuses = [http.post("/tac/verify", json={"code": f"UNKNOWN{i}"}).status_code for i in range(4)]
    assert statuses == [404, 404, 404, 429]
    other = http.post("/tac/verify", json={"code": "X"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 404  # another address has its own allowance
