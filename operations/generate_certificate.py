"""`$generate-certificate` on DiagnosticReport and Observation instances (GET or POST).

Output, chosen by the `format` parameter, else `_format`, else the Accept header:
- `application/pdf` (default): result sheet + EU digital certificate page(s);
- `image/png`: the QR code of one DCC (`certificate` = test (default) | recovery);
- `text/plain`: the `HC1:` string(s), one per line (test first);
- `application/fhir+json`: a Parameters resource with the PDF (Binary), and per DCC its type,
  UVCI, HC1 string and QR code (Binary).
Nothing is stored: every call makes the certificates again from the current resources.

With `Prefer: respond-async` (https://hl7.org/fhir/R4/async.html) the format and the resource
are checked at once, then a job (workers/jobs/certificate.py) renders the same answer with
`render`, which the client fetches from the Content-Location of the 202 (fhir_server/asynchronous.py).

For a DiagnosticReport: Observation = result[0], Specimen = Observation.specimen, Patient =
subject, Organization = the first Organization in performer (report, else observation).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from flask import current_app

from fhir_server import asynchronous
from fhir_server.http import FHIR_JSON, dumps, private_response
from fhir_server.outcome import FhirError
from fhir_server.storage import tasks
from operations.certificates.facts import facts_from_resources
from operations.certificates.generate import CertificateSet, issue_certificates
from operations.certificates.keys import KeyRing, load_keyring
from operations.certificates.pdf import render_pdf
from operations.certificates.qr import qr_png
from operations.registry import OperationCall, operation

FORMATS = {
    "application/pdf": "pdf",
    "pdf": "pdf",
    "image/png": "png",
    "png": "png",
    "text/plain": "text",
    "text": "text",
    "hc1": "text",
    "application/fhir+json": "parameters",
    "application/json": "parameters",
    "json": "parameters",
    "parameters": "parameters",
}
PARAMETERS = [
    {
        "name": "format",
        "use": "in",
        "min": 0,
        "max": "1",
        "type": "code",
        "documentation": "application/pdf | image/png | text/plain | application/fhir+json",
    },
    {
        "name": "certificate",
        "use": "in",
        "min": 0,
        "max": "1",
        "type": "code",
        "documentation": "For image/png: test (default) | recovery",
    },
    {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Binary"},
]


def var_dir() -> str:
    """Where development keys live: the core's settings when it set them, else VAR_DIR, else var."""
    settings = current_app.config.get("SETTINGS") if current_app else None
    return getattr(settings, "var_dir", None) or current_app.config.get("VAR_DIR") or os.environ.get("VAR_DIR") or "var"


def read_resource(store, resource_type: str, resource_id: str) -> dict:
    """The current resource JSON; its meta.versionId (set by the server) keys the UVCI."""
    return store.read(resource_type, resource_id).resource


def _reference_id(reference: dict | None, resource_type: str) -> str | None:
    """'Observation/123' (or an absolute URL, or a versioned reference) -> '123'."""
    parts = ((reference or {}).get("reference") or "").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == resource_type:
        return parts[-1]
    return None


def _read_referenced(
    store, reference: dict | None, resource_type: str, expression: str, required: bool = True
) -> dict | None:
    resource_id = _reference_id(reference, resource_type)
    if resource_id is None:
        if not required:
            return None
        raise FhirError.of(
            422,
            "required",
            f"Missing reference to a {resource_type}.",
            f"Référence à une ressource {resource_type} manquante.",
            expression,
        )
    return read_resource(store, resource_type, resource_id)


def _organization_reference(*resources: dict | None) -> dict | None:
    for resource in resources:
        for performer in (resource or {}).get("performer") or []:
            if _reference_id(performer, "Organization"):
                return performer
    return None


def read_ahead_reports(reads, report_ids: list[str]) -> None:
    """Fetch ahead (storage.read_ahead) what load_result_resources will read for these reports:
    one query per resource type for them all instead of five reads per report."""
    reads.load("DiagnosticReport", report_ids)
    reports = [r.resource for rid in report_ids if (r := reads.current("DiagnosticReport", rid)) and r.resource]
    first_results = [(report.get("result") or [None])[0] for report in reports]
    reads.load("Observation", [_reference_id(reference, "Observation") for reference in first_results])
    reads.load("Patient", [_reference_id(report.get("subject"), "Patient") for report in reports])
    observations = [
        o.resource
        for reference in first_results
        if (rid := _reference_id(reference, "Observation")) and (o := reads.current("Observation", rid)) and o.resource
    ]
    reads.load("Specimen", [_reference_id(o.get("specimen"), "Specimen") for o in observations])
    performers = [p for resource in (*reports, *observations) for p in resource.get("performer") or []]
    reads.load("Organization", [_reference_id(performer, "Organization") for performer in performers])


def load_result_resources(store, resource_type: str, resource_id: str) -> dict:
    """The five resources facts_from_resources needs, from a DiagnosticReport or Observation id."""
    is_report = resource_type == "DiagnosticReport"
    report = read_resource(store, resource_type, resource_id) if is_report else None
    if report is not None:
        observation = _read_referenced(
            store, (report.get("result") or [None])[0], "Observation", "DiagnosticReport.result"
        )
    else:
        observation = read_resource(store, "Observation", resource_id)
    subject = (report or observation).get("subject")
    return {
        "report": report,
        "observation": observation,
        "specimen": _read_referenced(
            store, observation.get("specimen"), "Specimen", "Observation.specimen", required=False
        ),
        "patient": _read_referenced(store, subject, "Patient", f"{resource_type}.subject"),
        "organization": _read_referenced(
            store,
            _organization_reference(report, observation),
            "Organization",
            f"{resource_type}.performer",
            required=False,
        ),
    }


def requested_format(call: OperationCall) -> str:
    refusal = ("Unsupported format '{value}'.", "Format « {value} » non pris en charge.")
    chosen = call.format_asked(("format", "_format"), FORMATS, refusal, "format")
    if chosen:
        return chosen
    accept = call.request.headers.get("Accept", "") if call.request is not None else ""
    for media_range in accept.split(","):
        chosen = FORMATS.get(media_range.split(";")[0].strip().lower())
        if chosen:
            return chosen
    return "pdf"


def _no_dcc_error() -> FhirError:
    return FhirError.of(
        422,
        "not-supported",
        "This result (serology or inconclusive) gives no EU digital certificate: only the PDF "
        "result sheet is available.",
        "Ce résultat (sérologie ou non conclusif) ne donne pas de certificat numérique européen : "
        "seule la fiche de résultat PDF est disponible.",
        "format",
    )


def _binary(content_type: str, data: bytes) -> dict:
    return {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(data).decode("ascii")}


def _parameters(certificates: CertificateSet) -> dict:
    pngs = {dcc.type: qr_png(dcc.hc1) for dcc in certificates.dccs}
    parameters = [{"name": "pdf", "resource": _binary("application/pdf", render_pdf(certificates, pngs))}]
    for dcc in certificates.dccs:
        parameters.append(
            {
                "name": "certificate",
                "part": [
                    {"name": "type", "valueCode": dcc.type},
                    {"name": "uvci", "valueString": dcc.uvci},
                    {"name": "hc1", "valueString": dcc.hc1},
                    {"name": "qr", "resource": _binary("image/png", pngs[dcc.type])},
                ],
            }
        )
    return {"resourceType": "Parameters", "parameter": parameters}


@dataclass(frozen=True)
class Rendered:
    """One answer of the operation: its bytes, full Content-Type and, for the PDF, a file name."""

    body: bytes
    content_type: str
    filename: str | None = None


def render(resources: dict, output: str, certificate: str | None, resource_id: str, keyring: KeyRing) -> Rendered:
    """What the operation answers for these resources, synchronously or in a job (the same bytes).

    Raises FhirError: 409/410/422 from the certificates, 422 when the result gives no DCC and
    the output needs one (with the reason: e.g. a rapid antigen test without its device, whose
    PDF is its result sheet alone), 404 when it gives none of the `certificate` type asked for."""
    sheet_alone = output in ("pdf", "parameters")  # the result sheet needs no DCC input
    certificates = issue_certificates(facts_from_resources(**resources), keyring, sheet_without_dcc=sheet_alone)
    if certificates.withheld is not None and not sheet_alone:
        raise certificates.withheld
    if output == "pdf":
        return Rendered(render_pdf(certificates), "application/pdf", f"certificat-{resource_id}.pdf")
    if output == "parameters":
        return Rendered(dumps(_parameters(certificates)), f"{FHIR_JSON}; charset=utf-8")
    if not certificates.dccs:
        raise _no_dcc_error()
    if output == "text":
        text = "\n".join(d.hc1 for d in certificates.dccs) + "\n"
        return Rendered(text.encode(), "text/plain; charset=utf-8")
    wanted = certificate or "test"
    dcc = certificates.dcc(wanted)
    if dcc is None:
        raise FhirError.of(
            404,
            "not-found",
            f"No '{wanted}' certificate for this result now.",
            f"Pas de certificat « {wanted} » pour ce résultat à cette date.",
            "certificate",
        )
    return Rendered(qr_png(dcc.hc1), "image/png")


@operation(
    "generate-certificate",
    instance_types=("DiagnosticReport", "Observation"),
    description="Generate the test result certificate (PDF), its EU DCC QR code (PNG) "
    "or HC1 string, from the stored result (asynchronously with Prefer: respond-async).",
    parameters=PARAMETERS,
)
def generate_certificate(call: OperationCall):
    output = requested_format(call)
    if asynchronous.requested(call.request):
        return _kick_off(call, output)
    resources = load_result_resources(call.store, call.resource_type, call.resource_id)
    rendered = render(resources, output, call.param("certificate"), call.resource_id, load_keyring(var_dir()))
    # the answer an asynchronous request's poll gives too (fhir_server/asynchronous.py)
    return private_response(rendered.body, rendered.content_type, rendered.filename)


def _kick_off(call: OperationCall, output: str):
    """Check what can be checked now (the format, the resource there and readable: another
    organisation's result answers 404 as it does synchronously), then leave the rest to a job."""
    read_resource(call.store, call.resource_type, call.resource_id)
    request = tasks.Request(
        resource_type=call.resource_type,
        resource_id=call.resource_id,
        format=output,
        certificate=call.param("certificate"),
        lang=call.lang,
    )
    return asynchronous.kick_off("generate-certificate", request, "workers.jobs.certificate.render_certificate")
