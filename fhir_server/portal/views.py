"""The portal's pages (server-rendered, usable without JavaScript; templates under
templates/portal/, one script and one style sheet under static/).

Routes carry no personal value: the deep link's token travels in a POST body only (never a URL,
a redirect target or a log), birth dates and codes likewise; results are addressed by their
DiagnosticReport id, and an id that is not one of the signed-in person's answers 404 as an
unknown one does.
"""

from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, make_response, redirect, render_template, request, url_for
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from ..http import private_response
from ..outcome import FhirError
from ..storage.accounts import utc_now
from ..storage.deliveries import DeepLink, DeepLinks
from ..storage.otps import LinkOtp, Otps
from . import franceconnect, results, session
from .messages import LANGUAGES, text
from .otp import otp_code, otp_hash, otp_key, well_formed

PARIS = ZoneInfo("Europe/Paris")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
ERROR_CODES = (400, 403, 404, 405, 429, 500, 503)


def blueprint() -> Blueprint:
    bp = Blueprint("portal", __name__, template_folder="templates", static_folder="static")
    bp.before_request(_before)
    bp.after_request(_after)
    for status in ERROR_CODES:
        bp.register_error_handler(status, error_page)
    bp.add_url_rule("/", "landing", landing)
    bp.add_url_rule("/lien", "open_link", open_link, methods=["GET", "POST"])
    bp.add_url_rule("/naissance", "birth_date", birth_date, methods=["GET", "POST"])
    bp.add_url_rule("/code", "code", code, methods=["GET", "POST"])
    bp.add_url_rule("/code/renvoi", "resend", resend, methods=["POST"])
    bp.add_url_rule("/resultats", "results", result_list)
    bp.add_url_rule("/resultats/<report_id>", "result", result_page)
    bp.add_url_rule("/resultats/<report_id>/certificat.pdf", "pdf", result_pdf)
    bp.add_url_rule("/resultats/<report_id>/qr.png", "qr", result_qr)
    bp.add_url_rule("/resultats/<report_id>/code-declaration.png", "declaration_qr", declaration_qr)
    bp.add_url_rule("/deconnexion", "sign_out", sign_out, methods=["POST"])
    franceconnect.register(bp)
    return bp


def _before():
    session.load()
    session.check_csrf()


def _after(response):
    session.save(response)
    for name, value in security_headers().items():
        response.headers.setdefault(name, value)
    if request.endpoint != "portal.static":
        response.headers["Cache-Control"] = "no-store"  # pages and files with personal data: never cached
    return response


def security_headers() -> dict[str, str]:
    """SECURITY_HEADERS, with FranceConnect's origin in form-action when it is offered: signing out
    POSTs here and is redirected to the provider's logout, and a browser holds every redirect of a
    form's sending to form-action (the end-session endpoint is on the issuer's host)."""
    issuer = settings().franceconnect_issuer if franceconnect.offered() else None
    if not issuer:
        return SECURITY_HEADERS
    parts = urlsplit(issuer)
    return {**SECURITY_HEADERS, "Content-Security-Policy": f"{CSP} {parts.scheme}://{parts.netloc}"}


def _context(here: bool = True) -> dict:
    """What every portal template is given (`here`: the language links lead to this page, else
    to the home page)."""
    lang = session.language()
    return {
        "lang": lang,
        "t": lambda key, **values: text(key, lang, **values),
        "lang_links": lang_links(lang, here),
        "csrf_token": session.csrf_token,
        "signed_in": session.current(),
        "franceconnect": franceconnect.offered(),
    }


def lang_links(lang: str, here: bool = True) -> list[tuple[str, str]]:
    """(language, URL) of this page in each other language: the same page when it can be got,
    else the home page (a form's answer cannot; an error page's address may be anything)."""
    rule = request.url_rule
    gettable = here and rule is not None and "GET" in (rule.methods or ())
    path = request.path if gettable else url_for("portal.landing")
    return [(other, f"{path}?lang={other}") for other in LANGUAGES if other != lang]


def t(key: str, **values) -> str:
    return text(key, session.language(), **values)


def page(template: str, status: int = 200, here: bool = True, **context):
    return render_template(f"portal/{template}", **_context(here), **context), status


def message_page(title: str, body: str, status: int, retry_after: int | None = None, here: bool = True):
    context = _context(here)
    response = make_response(render_template("portal/message.html", **context, title=title, body=body), status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(int(retry_after), 1))
    return response


def error_page(error: HTTPException):
    status = error.code if isinstance(error, HTTPException) and error.code in ERROR_CODES else 500
    return message_page(t(f"error.{status}.title"), t(f"error.{status}.body"), status, here=False)


def settings():
    return current_app.config["SETTINGS"]


# -- 1. the deep link -------------------------------------------------------------------------------
def landing():
    return page("landing.html", expired=session.expired())


def open_link():
    if request.method == "GET":
        return redirect(url_for("portal.landing"), 303)
    token = _typed_token(request.form.get("token") or request.form.get("code") or "")
    if not token:
        return page("landing.html", 400, error=t("landing.empty"))
    link = DeepLinks().resolve(token) if token.isascii() else None
    if link is None:
        return _link_invalid()
    session.begin_link(link.hash)
    Otps().of_link(link.hash, link.patient, link.expires)
    return redirect(url_for("portal.birth_date"), 303)


def _typed_token(typed: str) -> str:
    """The token of what was typed or pasted: the whole link, or the part after `#`."""
    return typed.strip().rpartition("#")[2].strip()


def _link_invalid():
    return page("link_invalid.html", 404, months=settings().result_retention_months)


def _current_link() -> DeepLink | None:
    """The live deep link this session is signing in with."""
    link_hash = session.pending_link()
    if not link_hash:
        return None
    link = DeepLink.objects(hash=link_hash).first()
    return link if link is not None and link.expires > utc_now() else None


def _otp_of(link: DeepLink) -> LinkOtp:
    return Otps().of_link(link.hash, link.patient, link.expires)


# -- 2. the birth date ------------------------------------------------------------------------------
def birth_date():
    link = _current_link()
    if link is None:
        return _start_again()
    otp = _otp_of(link)
    if otp.locked(utc_now()):
        return _locked(otp)
    if request.method == "GET":
        return page("birth_date.html")
    fields = {name: (request.form.get(name) or "").strip() for name in ("day", "month", "year")}
    typed = _date_of(fields)
    if typed is None:
        return page("birth_date.html", 400, error=t("birth.invalid"), values=fields)
    patient = results.store().current("Patient", link.patient)
    stated = (patient.resource or {}).get("birthDate") if patient and not patient.deleted else None
    if not _same_birth_date(typed, stated):
        return _wrong_answer(otp, "birth_date.html", values=fields)
    session.confirm_birth()
    if not _reachable(link):
        return page("message.html", 409, title=t("code.title"), body=t("code.no_contact"))
    refused = _send_code(otp)
    return refused or redirect(url_for("portal.code"), 303)


def _date_of(fields: dict) -> date | None:
    day, month, year = fields["day"], fields["month"], fields["year"]
    if not (day.isdigit() and month.isdigit() and year.isdigit() and len(year) == 4):
        return None
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        return None


def _same_birth_date(typed: date, stated: str | None) -> bool:
    """The typed date against the Patient's birthDate, to its precision (YYYY, YYYY-MM or full)."""
    if not stated:
        return False
    return typed.isoformat()[: len(stated)] == stated and len(stated) in (4, 7, 10)


def _reachable(link: DeepLink) -> bool:
    from ..notifications import contacts

    patient = results.store().current("Patient", link.patient)
    mobiles, emails = contacts(patient.resource if patient and patient.resource else {})
    return bool(mobiles or emails)


def _wrong_answer(otp: LinkOtp, template: str, **context):
    """A wrong birth date or code: the same words either way, counted in the link's budget."""
    config = settings()
    if Otps().fail(otp.id, utc_now(), config.otp_max_attempts, timedelta(minutes=config.otp_lockout_minutes)):
        return _locked(Otps().get(otp.id))
    return page(template, 401, error=t("wrong"), **context)


def _locked(otp: LinkOtp):
    minutes = settings().otp_lockout_minutes
    seconds = (otp.locked_until - utc_now()).total_seconds() if otp.locked_until else minutes * 60
    return message_page(t("error.429.title"), t("locked", minutes=minutes), 429, seconds)


def _start_again():
    return page("landing.html", 400, expired=True)


# -- 3. the one-time code ---------------------------------------------------------------------------
def _send_code(otp: LinkOtp):
    """Issue a code and hand its sending to the queue; None, or the page saying why not."""
    config = settings()
    now = utc_now()
    issued = Otps().issue(
        otp.id,
        now,
        timedelta(seconds=config.otp_resend_seconds),
        config.otp_max_sends,
        timedelta(minutes=config.otp_lockout_minutes),
    )
    if issued == "locked":
        return _locked(Otps().get(otp.id))
    if issued == "too-soon":
        wait = config.otp_resend_seconds - (now - Otps().get(otp.id).last_sent).total_seconds()
        return message_page(t("error.429.title"), t("too_soon", seconds=max(int(wait), 1)), 429, wait)
    if issued == "too-many":
        return message_page(
            t("error.429.title"),
            t("too_many", minutes=config.otp_lockout_minutes),
            429,
            config.otp_lockout_minutes * 60,
        )
    key = otp_key(config)
    code = otp_code(key, issued.id, issued.counter)
    Otps().arm(issued.id, issued.counter, otp_hash(key, issued.id, issued.counter, code), now + _otp_validity())
    if not _enqueue(issued):
        Otps().withdraw(issued.id, issued.counter)
        return message_page(t("error.503.title"), t("unavailable"), 503, 60)
    return None


def _otp_validity() -> timedelta:
    return timedelta(minutes=settings().otp_minutes)


def _enqueue(otp: LinkOtp) -> bool:
    """The sending job, given the record's id only; False when the queue cannot be reached."""
    from rq import Retry

    from workers.queue import queue

    config = settings()
    if not config.redis_url:
        return False
    try:
        queue(config.redis_url, config.queue_name).enqueue(
            "workers.jobs.otp.send_otp",
            otp.id,
            job_id=f"otp-{otp.id}-{otp.counter}",
            retry=Retry(max=2, interval=[2, 10]),
            job_timeout=30,
            result_ttl=config.otp_minutes * 60,
            failure_ttl=3600,
        )
    except (RedisError, OSError):
        return False
    return True


def code():
    link = _current_link()
    if link is None or not session.birth_confirmed():
        return _start_again()
    otp = _otp_of(link)
    now = utc_now()
    if otp.locked(now):
        return _locked(otp)
    if request.method == "GET":
        return page("code.html")
    typed = (request.form.get("code") or "").replace(" ", "").strip()
    if not well_formed(typed):
        return page("code.html", 400, error=t("code.invalid"))
    if not otp.code_hash or not otp.code_expires or otp.code_expires <= now:
        return page("code.html", 401, error=t("code.expired"))
    key = otp_key(settings())
    if otp_hash(key, otp.id, otp.counter, typed) != otp.code_hash:
        return _wrong_answer(otp, "code.html")
    if not Otps().use(otp.id, otp.code_hash, now):  # used by a request of the same instant
        return page("code.html", 401, error=t("code.expired"))
    session.sign_in([link.patient], "deep-link")
    return redirect(url_for("portal.results"), 303)


def resend():
    link = _current_link()
    if link is None or not session.birth_confirmed():
        return _start_again()
    refused = _send_code(_otp_of(link))
    return refused or redirect(url_for("portal.code"), 303)


# -- 4. the results ---------------------------------------------------------------------------------
def _signed_in():
    signed = session.current()
    if signed is None:
        abort(_redirect_home())
    return signed


def _redirect_home():
    return redirect(url_for("portal.landing"), 303)


def result_list():
    signed = _signed_in()
    found = results.results_of(signed)
    for result in found:
        results.audit(signed, result, "list")
    return page("results.html", results=found, months=settings().result_retention_months, when=local_time)


def _one_result(report_id: str):
    signed = _signed_in()
    result = results.result_of(signed, report_id)
    if result is None:
        abort(404)
    return signed, result


def result_page(report_id: str):
    signed, result = _one_result(report_id)
    results.audit(signed, result, "detail")
    hc1 = results.hc1(result)
    return page(
        "result.html",
        result=result,
        when=local_time,
        wallet=results.wallet_link(hc1) if hc1 else None,
        declaration=results.declaration_code(result),
    )


def result_pdf(report_id: str):
    signed, result = _one_result(report_id)
    results.audit(signed, result, "pdf")
    try:
        body = results.pdf(result)
    except FhirError:  # a result the certificates cannot read (a test code they do not know)
        return message_page(t("result.no_sheet.title"), t("result.no_sheet"), 422)
    return private_response(body, "application/pdf", f"certificat-{result.id}.pdf", attachment=True)


def result_qr(report_id: str):
    signed, result = _one_result(report_id)
    png = results.qr_png(result)
    if png is None:
        abort(404)
    results.audit(signed, result, "qr")
    return private_response(png, "image/png")


def declaration_qr(report_id: str):
    """The QR code of a positive result's TousAntiCovid declaration code."""
    from ..declaration_codes import qr_code_png

    signed, result = _one_result(report_id)
    code = results.declaration_code(result)
    if code is None:
        abort(404)
    results.audit(signed, result, "declaration-code")
    return private_response(qr_code_png(code.code), "image/png")


def sign_out():
    session.sign_out()
    return page("message.html", title=t("signed_out.title"), body=t("signed_out.body"))


def local_time(moment, lang: str) -> str:
    """A naive UTC time as Paris shows it."""
    local = moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(PARIS)
    return local.strftime("%d/%m/%Y %H:%M") if lang == "fr" else local.strftime("%Y-%m-%d %H:%M")


def unmatched(error: HTTPException):
    """Routing errors under /portail (no such page, method not allowed): the portal's own pages,
    with its headers."""
    return _with_headers(error_page(error))


def _with_headers(response):
    for name, value in {**security_headers(), "Cache-Control": "no-store"}.items():
        response.headers.setdefault(name, value)
    return response
