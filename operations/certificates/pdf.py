"""The printable certificate (PDF, at most 1 MB): the two forms of the SI-DEP guide, bilingual.

Page 1, "Fiche de résultat": identity, test, result, sampling time (Europe/Paris), laboratory and
the validity wording. Then one "Certificat numérique européen" page per DCC (test, recovery) with
its QR code. Serology and inconclusive results have the result sheet only.

Rendered with xhtml2pdf from templates/certificate.html (parsed once, then cached); the QR code is
embedded as a PNG data URI; fonts are the PDF standard ones (nothing to embed, small files).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
from reportlab import rl_config
from xhtml2pdf import pisa

from .facts import loinc_table
from .generate import CertificateSet
from .qr import qr_png

PARIS = ZoneInfo("Europe/Paris")
MAX_PDF_BYTES = 1024 * 1024
QR_SIZE_PT = 220
_HERE = Path(__file__).parent

# ReportLab wraps image streams in ASCII85 by default, with a pure-Python encoder when its C
# accelerator is absent: a third of the rendering time and +25% size for a 7-bit-safe PDF nobody
# needs. Binary streams are valid PDF.
rl_config.useA85 = 0


class PdfRenderingError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True, auto_reload=False
    )
    return environment.get_template("certificate.html")


@lru_cache(maxsize=1)
def wording() -> dict:
    return json.loads((_HERE / "wording.json").read_text(encoding="utf-8"))


def french_date(value: str | dt.date) -> str:
    """'1985-03-07' -> '07/03/1985'; partial dates keep what they have ('1985-03' -> '03/1985')."""
    parts = str(value).split("-")
    return "/".join(reversed(parts))


def paris_time(moment: dt.datetime) -> str:
    return moment.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def template_context(certificates: CertificateSet, qr_pngs: dict[str, bytes]) -> dict:
    facts, words = certificates.facts, wording()
    kind = loinc_table()["kinds"][facts.test_kind]
    validity = words["validity"].get(facts.result) if certificates.dccs else None
    return {
        "identity": {
            "family_name": facts.family_name,
            "given_names": facts.given_names,
            "birth_date": french_date(facts.birth_date),
        },
        "test": {
            "label_fr": kind["label_fr"],
            "label_en": kind["label_en"],
            "loinc": facts.loinc,
            "result_fr": words["results"][facts.result]["fr"],
            "result_en": words["results"][facts.result]["en"],
            "sampled_at": paris_time(facts.sampled_at),
        },
        "lab": {"name": facts.lab_name or "-", "finess": facts.lab_finess or "-"},
        "validity": validity,
        "footnote": words["validity"]["footnote"],
        "no_dcc": words["validity"]["no_dcc"],
        "generated_at": paris_time(certificates.generated_at),
        "qr_size_pt": QR_SIZE_PT,
        "dccs": [
            {
                "type": dcc.type,
                "uvci": dcc.uvci,
                "qr_data_uri": _data_uri(qr_pngs[dcc.type]),
                "label_fr": words["certificate_types"][dcc.type]["fr"],
                "label_en": words["certificate_types"][dcc.type]["en"],
                "valid_from": french_date(dcc.payload.get("r", [{}])[0].get("df", "")),
                "valid_until": french_date(dcc.payload.get("r", [{}])[0].get("du", "")),
            }
            for dcc in certificates.dccs
        ],
    }


def render_html(certificates: CertificateSet, qr_pngs: dict[str, bytes] | None = None) -> str:
    qr_pngs = qr_pngs or {dcc.type: qr_png(dcc.hc1) for dcc in certificates.dccs}
    return _template().render(template_context(certificates, qr_pngs))


def render_pdf(certificates: CertificateSet, qr_pngs: dict[str, bytes] | None = None) -> bytes:
    """The PDF bytes; pass the QR PNGs when already made (for the Parameters output)."""
    output = io.BytesIO()
    status = pisa.CreatePDF(render_html(certificates, qr_pngs), dest=output, encoding="utf-8")
    if status.err:
        raise PdfRenderingError(f"xhtml2pdf reported {status.err} error(s)")
    pdf = output.getvalue()
    if len(pdf) > MAX_PDF_BYTES:
        raise PdfRenderingError(f"PDF of {len(pdf)} bytes exceeds the 1 MB limit")
    return pdf
