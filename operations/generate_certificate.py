"""`$generate-certificate` on DiagnosticReport and Observation instances (GET or POST).

Output, chosen by the `format` parameter, else `_format`, else the Accept header:
- `application/pdf` (default): result sheet + EU digital certificate page(s);
- `image/png`: the QR code of one DCC (`certificate` = test (default) | recovery);
- `text/plain`: the `HC1:` string(s), one per line (test first);
- `application/fhir+json`: a Parameters resource with the PDF (Binary), and per DCC its type,
  UVCI, HC1 string and QR code (Binary).
Nothing is stored: every call makes the certificates again from the current resources.

For a DiagnosticReport: Observation = result[0], Specimen = Observation.specimen, Patient =
subject, Organization = the first Organization in performer (report, else observation).
"""

from __future__ import annotations

import base64
import os

from flask import Response, current_app

from fhir_server.outcome import FhirError
from operations.certificates.facts import facts_from_resources
from operations.certificates.generate import CertificateSet, issue_certificates
from operations.certificates.keys import load_keyring
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
    for value in (call.param("format"), call.param("_format")):
        if value:
            chosen = FORMATS.get(str(value).split(";")[0].strip().lower())
            if chosen is None:
                raise FhirError.of(
                    406,
                    "not-supported",
                    f"Unsupported format '{value}'.",
                    f"Format « {value} » non pris en charge.",
                    "format",
                )
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


def _private(body, mimetype: str, filename: str | None = None) -> Response:
    # Health data: never cached by a shared cache or kept by the browser.
    headers = {"Cache-Control": "no-store"}
    if filename:
        headers["Content-Disposition"] = f'inline; filename="{filename}"'
    return Response(body, mimetype=mimetype, headers=headers)


@operation(
    "generate-certificate",
    instance_types=("DiagnosticReport", "Observation"),
    description="Generate the test result certificate (PDF), its EU DCC QR code (PNG) "
    "or HC1 string, from the stored result.",
    parameters=PARAMETERS,
)
def generate_certificate(call: OperationCall):
    output = requested_format(call)
    resources = load_result_resources(call.store, call.resource_type, call.resource_id)
    certificates = issue_certificates(facts_from_resources(**resources), load_keyring(var_dir()))
    if output == "pdf":
        return _private(render_pdf(certificates), "application/pdf", f"certificat-{call.resource_id}.pdf")
    if output == "parameters":
        return _parameters(certificates)
    if not certificates.dccs:
        raise _no_dcc_error()
    if output == "text":
        return _private("\n".join(d.hc1 for d in certificates.dccs) + "\n", "text/plain")
    wanted = call.param("certificate", "test")
    dcc = certificates.dcc(wanted)
    if dcc is None:
        raise FhirError.of(
            404,
            "not-found",
            f"No '{wanted}' certificate for this result now.",
            f"Pas de certificat « {wanted} » pour ce résultat à cette date.",
            "certificate",
        )
    return _private(qr_png(dcc.hc1), "image/png")
