"""The pages of the web UI."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, g, make_response, redirect, render_template, request, url_for

from ..auth.principal import ROLE_OPERATOR
from ..http import private_response
from ..outcome import FhirError
from . import audit, console, forms, indicators, results, session, throttle
from .session import PROFESSIONALS, RESULT_READERS, RESULT_WRITERS, ROLE_LABELS, login_required

SECURITY_HEADERS = {
    "Cache-Control": "no-store",  # pages show patient data: never cached
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'",
}


def blueprint(limiter, settings) -> Blueprint:
    """The UI's pages; `limiter` throttles the login (throttle.py)."""
    bp = Blueprint("web", __name__, template_folder="templates", static_folder="static")

    @bp.before_request
    def _before():
        if not current_app.config["SETTINGS"].auth_enabled:
            abort(404)
        session.load_session()
        session.check_csrf()

    @bp.after_request
    def _after(response):
        session.set_login_csrf_cookie(response)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @bp.app_context_processor
    def _globals():
        if not request.blueprint == "web":
            return {}
        return {
            "csrf_token": session.csrf_token,
            "principal": g.get("principal") if g.get("web_session") else None,
            "role_labels": ROLE_LABELS,
            "professionals": PROFESSIONALS,
            "result_readers": RESULT_READERS,
            "result_writers": RESULT_WRITERS,
            "operator_role": ROLE_OPERATOR,
            "indicator_readers": indicators.READERS,
        }

    for code, title in ((400, "Requête invalide"), (403, "Accès refusé"), (404, "Page introuvable")):
        bp.register_error_handler(code, _error_page(code, title))
    bp.register_error_handler(429, _throttled)

    bp.add_url_rule("/", "home", home)
    bp.add_url_rule("/login", "login", throttle.limited(limiter, settings, login), methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["POST"])
    bp.add_url_rule("/results", "results", result_list)
    bp.add_url_rule("/results/new", "new_result", new_result, methods=["GET", "POST"])
    bp.add_url_rule("/results/<report_id>", "result", result_page)
    bp.add_url_rule("/results/<report_id>/patient", "correct", correct, methods=["GET", "POST"])
    bp.add_url_rule("/results/<report_id>/certificate", "certificate", certificate)
    bp.add_url_rule("/operator", "operator", operator)
    bp.add_url_rule("/aggregates", "aggregates", indicators.page)
    bp.add_url_rule("/aggregates/chart.svg", "aggregates_chart", indicators.chart)
    bp.add_url_rule("/aggregates/data.csv", "aggregates_csv", indicators.data)
    bp.add_url_rule("/operator/jobs/<job_id>/retry", "retry_job", retry_job, methods=["POST"])
    bp.add_url_rule("/operator/events/<event_id>/retry", "retry_event", retry_event, methods=["POST"])
    return bp


def _error_page(code: int, title: str):
    def handle(error):
        return render_template("error.html", title=title, message=getattr(error, "description", "")), code

    return handle


# -- login -----------------------------------------------------------------------------------------
def home():
    principal = g.get("principal")
    if g.get("web_session") is None:
        return redirect(url_for("web.login"))
    return redirect(url_for("web.operator" if principal.role == ROLE_OPERATOR else "web.results"))


def _safe_next(target: str | None) -> str | None:
    """Only a path of this UI (no open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or target.startswith("//"):
        return None
    return target


THROTTLED = (
    "Trop de tentatives de connexion depuis votre poste ou sur cet identifiant : patientez quelques "
    "minutes avant de réessayer."
)


def _locked_message() -> str:
    minutes = throttle.lockout().duration.total_seconds() // 60
    return (
        f"Connexion bloquée pour {minutes:.0f} minutes sur ce poste après {throttle.lockout().limit} échecs "
        "consécutifs avec cet identifiant. Vous pouvez vous connecter dès maintenant depuis un navigateur où "
        "vous vous êtes déjà connecté(e), ou demander le déblocage à un opérateur."
    )


def _login_page(error: str | None, status: int):
    return render_template(
        "login.html",
        error=error,
        next=_safe_next(request.values.get("next")) or "",
        login=request.form.get("login", ""),
    ), status


def _throttled(error):
    """429 from a login throttle (throttle.py): the same page for every account, known or not."""
    return _login_page(THROTTLED, 429)


def login():
    """Password + TOTP. Every refusal is the same page, status and cost for an unknown login as for
    a known one with a wrong password or code (storage/users.py, throttle.py)."""
    if request.method == "POST":
        login_name = throttle.typed_login()
        outcome, user = session.users().authenticate(
            login_name,
            request.form.get("password", ""),
            request.form.get("code", ""),
            throttle.client(),
            throttle.lockout(),
        )
        if outcome == "ok":
            response = make_response(redirect(_safe_next(request.form.get("next")) or url_for("web.home")))
            session.start_session(response, user)
            throttle.remember_device(response, login_name)
            return response
        if outcome == "locked":  # not counted by the account's rate: one client cannot spend it alone
            return _login_page(_locked_message(), 423)
        throttle.failed_login()
        return _login_page("Identifiant, mot de passe ou code de vérification incorrect.", 401)
    if g.get("web_session") is not None:
        return redirect(url_for("web.home"))
    return _login_page(None, 200)


def logout():
    response = make_response(redirect(url_for("web.login")))
    session.end_session(response)
    return response


# -- results -------------------------------------------------------------------------------------------
def _restricted() -> bool:
    """Professionals see the results they entered or requested; laboratory staff and public health
    see what the policy lets them see (their organisation's, everyone's)."""
    return g.principal.role in PROFESSIONALS


@login_required(*RESULT_READERS)
def result_list():
    criteria = {
        "name": request.args.get("name", "").strip(),
        "birth_date": forms._date(request.args.get("birth_date", "").strip()),
        "dossier": request.args.get("dossier", "").strip(),
    }
    rows, error = [], None
    try:
        bundle, rows = results.search_reports(**criteria, mine=g.principal if _restricted() else None)
        audit.record("search-type", "DiagnosticReport", bundle)
    except FhirError as exc:
        audit.refused("search-type", "DiagnosticReport", exc)
        error = "; ".join(i.fr or i.en for i in exc.issues)
    return render_template("results.html", rows=rows, criteria=criteria, error=error, searched=any(criteria.values()))


def _site_choices() -> list[str]:
    return sorted(g.principal.sites)


@login_required(*PROFESSIONALS)
def new_result():
    principal = g.principal
    blocked = results.can_enter(principal)
    tests, devices = results.antigen_tests(), results.rat_devices()
    checked = forms.Checked({"sampled_at": forms.now_local(), "result": "", "sex": ""})
    failure = None
    status = 200
    if request.method == "POST" and not blocked:
        checked = forms.result(request.form, tests, devices)
        site = None  # a professional without organisation enters in their own name
        if principal.organisation:
            site = request.form.get("site") or (_site_choices()[0] if _site_choices() else "")
            if site not in principal.sites:
                checked.errors.setdefault("site", []).append("Site : choisissez l'un de vos sites")
        if checked.ok:
            built = results.result_bundle(principal, checked.values, site)
            try:
                response = results.submit(built.bundle)
            except FhirError as exc:
                audit.refused("transaction", None, exc)
                failure = [i.fr or i.en for i in exc.issues]
                status = exc.status
            else:
                audit.record("transaction", None, response)
                report = response["entry"][-1]["response"]["location"].split("/")[1]
                return redirect(url_for("web.result", report_id=report, saved=built.dossier))
        else:
            status = 422
    return render_template(
        "result_form.html",
        checked=checked,
        tests=tests,
        devices=devices,
        sexes=forms.SEXES,
        result_choices=forms.RESULTS,
        sites=_site_choices(),
        blocked=blocked,
        failure=failure,
        label=results.label,
        max_date=forms.today().isoformat(),
    ), status


def _read(report_id: str, interaction: str = "read", correcting: bool = False):
    """The result and its resources, or the error page (refusals audited). A professional reads the
    results they entered or requested, and corrects only those they entered."""
    try:
        found = results.read_result(report_id)
    except FhirError as exc:
        audit.refused(interaction, "DiagnosticReport", exc)
        abort(403 if exc.status == 403 else 404)
    found["correctable"] = g.principal.role in RESULT_WRITERS
    if _restricted():
        entered = (
            g.principal.belongs(found["report"].owner)  # theirs (their organisation's), and by them
            and results.entered_by(found["report"].resource, results.practitioner_reference(g.principal))
        )
        found["correctable"] = entered
        requested = not entered and results.requested_by(found["report"], g.principal)
        if not entered and (correcting or not requested):
            audit.record(
                interaction,
                "DiagnosticReport",
                results.as_bundle({**found, "observations": [], "specimens": [], "requests": []}),
                403,
            )
            abort(
                403,
                description="Vous avez prescrit ce test sans le réaliser : seul le professionnel qui l'a "
                "réalisé peut corriger le patient."
                if requested
                else "Ce résultat n'a pas été saisi par vous.",
            )
    return found


@login_required(*RESULT_READERS)
def result_page(report_id: str):
    found = _read(report_id)
    audit.record("read", "DiagnosticReport", results.as_bundle(found))
    patient = found["patient"].resource if found["patient"] else {}
    return render_template(
        "result.html", found=found, patient=patient, r=results, values=results.form_values(patient) if patient else {}
    )


@login_required(*RESULT_READERS)
def certificate(report_id: str):
    """The result's certificate (PDF of `$generate-certificate`), for a patient without mobile or
    e-mail whom the guide sends to the place of the test: for whoever may read the result page
    (the same rule), a file to save, never cached, every download audited."""
    _read(report_id, interaction="operation-instance")
    try:
        rendered = results.certificate_pdf(report_id)
    except FhirError as exc:
        audit.refused("operation-instance", "DiagnosticReport", exc)
        message = "; ".join(i.fr or i.en for i in exc.issues)
        return render_template("error.html", title="Certificat indisponible", message=message), exc.status
    audit.record("operation-instance", "DiagnosticReport", results.as_bundle(results.read_result(report_id)))
    return private_response(rendered.body, rendered.content_type, rendered.filename, attachment=True)


@login_required(*RESULT_WRITERS)
def correct(report_id: str):
    found = _read(report_id, correcting=True)
    record = found["patient"]
    if record is None:
        abort(404)
    failure = None
    status = 200
    if request.method == "POST":
        checked = forms.identity(request.form)
        if str(record.version) != request.form.get("version"):
            failure = [
                "Le patient a été modifié entre-temps par quelqu'un d'autre : vérifiez ses données "
                "ci-dessous puis enregistrez à nouveau."
            ]
            checked = forms.Checked(results.form_values(record.resource))
            status = 409
        elif checked.ok:
            try:
                response, renotified = results.correct_patient(record, checked.values)
            except FhirError as exc:
                audit.refused("transaction", None, exc)
                failure = [i.fr or i.en for i in exc.issues]
                status = exc.status
            else:
                audit.record("transaction", None, response)
                return redirect(
                    url_for("web.result", report_id=report_id, corrected="contact" if renotified else "identity")
                )
        else:
            status = 422
    else:
        audit.record("read", "Patient", record.resource)
        checked = forms.Checked(results.form_values(record.resource))
    return render_template(
        "patient_form.html",
        checked=checked,
        record=record,
        report_id=report_id,
        sexes=forms.SEXES,
        failure=failure,
        max_date=forms.today().isoformat(),
    ), status


# -- operators -------------------------------------------------------------------------------------------
@login_required(ROLE_OPERATOR)
def operator():
    try:
        queue = console.queue_state()
        queue_error = None
    except Exception as exc:  # noqa: BLE001 - the console shows that Redis cannot be reached
        queue, queue_error = None, str(exc)
    outbox = console.outbox()
    conflict_count, conflicts = console.identity_conflicts()
    return render_template(
        "operator.html",
        queue=queue,
        queue_error=queue_error,
        counts=outbox.counts(),
        failed_events=outbox.failed(),
        change_log=console.change_log(),
        conflict_count=conflict_count,
        conflicts=conflicts,
    )


@login_required(ROLE_OPERATOR)
def retry_job(job_id: str):
    done = console.requeue(job_id)
    return redirect(url_for("web.operator", job=job_id, requeued="1" if done else "0"))


@login_required(ROLE_OPERATOR)
def retry_event(event_id: str):
    done = console.outbox().retry(event_id)
    return redirect(url_for("web.operator", event=event_id, requeued="1" if done else "0"))
