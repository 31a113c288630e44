"""The printable certificate (PDF, at most 1 MB): the two forms of the SI-DEP guide, bilingual.

Page 1, "Fiche de résultat": identity, test, result, sampling time (Europe/Paris), laboratory and
the validity wording. Then one "Certificat numérique européen" page per DCC (test, recovery) with
its QR code. Serology and inconclusive results have the result sheet only.

Laid out by xhtml2pdf from templates/certificate.html. xhtml2pdf draws each layout (the test, the
result, the certificates made, the wording) once per process with markers in place of the fields
that differ between certificates (names, dates, UVCI, QR codes); a certificate is that drawing with
its own words and QR images put where the markers were (pdf_layouts.py), when they fit as xhtml2pdf
would have laid them out. Otherwise (a name too long for its line, a measured serology value...)
xhtml2pdf draws the certificate whole, its QR codes as PNG data URIs. Names may be in any Latin script (Polish, Hungarian, Turkish, Czech
...), which the PDF standard fonts (Latin-1) cannot draw: the template embeds DejaVu Sans (free
licence, Debian package fonts-dejavu-core, in the Makefile's SYSTEM_PACKAGES), found under
CERT_FONT_DIR or the usual system directories; only the glyphs used are embedded (subsets).
Without it the PDF falls back to Helvetica and a warning is logged.

The validity printed is the certificates' own: "Valable jusqu'au" the CWT expiry of the test
certificate (72 hours after the sampling for a negative result) and the recovery's `du`.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
from reportlab import rl_config
from xhtml2pdf import pisa
from xhtml2pdf.config.resources import ResourceAccessPolicy

from .facts import loinc_table
from .generate import CertificateSet
from .pdf_layouts import DIGITS, IMAGE, LAYOUT_CACHE_SIZE, LINE_END, MONOSPACE, Field, Layouts
from .qr import qr_image, qr_png

log = logging.getLogger(__name__)
PARIS = ZoneInfo("Europe/Paris")
FONT_FAMILY = "DejaVuSans"
FONT_FILES = {  # (bold, italic) -> file of the DejaVu Sans family
    (False, False): "DejaVuSans.ttf",
    (True, False): "DejaVuSans-Bold.ttf",
    (False, True): "DejaVuSans-Oblique.ttf",
    (True, True): "DejaVuSans-BoldOblique.ttf",
}
FONT_DIRECTORIES = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/local/share/fonts/dejavu")
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


@lru_cache(maxsize=1)
def fonts() -> dict:
    """The font faces the template declares: DejaVu Sans when found, else none (Helvetica)."""
    directories = [os.environ["CERT_FONT_DIR"]] if os.environ.get("CERT_FONT_DIR") else []
    for directory in (*directories, *FONT_DIRECTORIES):
        paths = {style: Path(directory) / name for style, name in FONT_FILES.items()}
        if all(path.is_file() for path in paths.values()):
            faces = [{"path": str(p), "bold": b, "italic": i} for (b, i), p in paths.items()]
            return {"family": FONT_FAMILY, "faces": faces, "directory": Path(directory)}
    log.warning("DejaVu Sans not found (Debian: fonts-dejavu-core): names outside Latin-1 will not print")
    return {"family": "Helvetica", "faces": [], "directory": None}


@lru_cache(maxsize=1)
def _resource_policy() -> ResourceAccessPolicy:
    """What the rendering may read: the font directory, nothing remote (the QR is a data URI)."""
    return ResourceAccessPolicy(allow_remote=False, base_dir=fonts()["directory"])


def _valid_until(dcc) -> str:
    if dcc.type == "recovery":
        return french_date(dcc.payload["r"][0]["du"])
    return paris_time(dcc.expires_at) + " (heure de Paris / Paris time)"


def template_context(certificates: CertificateSet) -> dict:
    """What the template shows, the QR codes aside (their data URIs are added for xhtml2pdf)."""
    facts, words = certificates.facts, wording()
    kind = loinc_table()["kinds"][facts.test_kind]
    validity = words["validity"].get(facts.result) if certificates.dccs else None
    results = words["serology_results" if facts.test_kind == "serology" else "results"][facts.result]
    withheld = certificates.withheld
    if withheld is not None:
        issue = withheld.issues[0]
        withheld = {
            "fr": f"{words['validity']['withheld']['fr']} {issue.fr or issue.en}",
            "en": f"{words['validity']['withheld']['en']} {issue.en}",
        }
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
            "result_fr": results["fr"],
            "result_en": results["en"],
            "measured": facts.measured,
            "sampled_at": paris_time(facts.sampled_at),
        },
        "lab": {"name": facts.lab_name or "-", "finess": facts.lab_finess or "-"},
        "validity": validity,
        "withheld": withheld,
        "valid_until": words["validity"]["valid_until"],
        "valid_from": words["validity"]["valid_from"],
        "fonts": fonts(),
        "footnote": words["validity"]["footnote"],
        "no_dcc": words["validity"]["no_dcc"],
        "generated_at": paris_time(certificates.generated_at),
        "qr_size_pt": QR_SIZE_PT,
        "dccs": [
            {
                "type": dcc.type,
                "uvci": dcc.uvci,
                "label_fr": words["certificate_types"][dcc.type]["fr"],
                "label_en": words["certificate_types"][dcc.type]["en"],
                "valid_from": french_date(dcc.payload["r"][0]["df"]) if dcc.type == "recovery" else None,
                "valid_until": _valid_until(dcc),
            }
            for dcc in certificates.dccs
        ],
    }


def render_html(certificates: CertificateSet, qr_pngs: dict[str, bytes] | None = None) -> str:
    qr_pngs = qr_pngs or {dcc.type: qr_png(dcc.hc1) for dcc in certificates.dccs}
    context = template_context(certificates)
    for shown, dcc in zip(context["dccs"], certificates.dccs, strict=True):
        shown["qr_data_uri"] = _data_uri(qr_pngs[dcc.type])
    return _template().render(context)


def _draw(html: str) -> bytes:
    output = io.BytesIO()
    status = pisa.CreatePDF(html, dest=output, encoding="utf-8", resource_policy=_resource_policy())
    if status.err:
        raise PdfRenderingError(f"xhtml2pdf reported {status.err} error(s)")
    return output.getvalue()


def _fields(context: dict) -> list[Field]:
    """The context's values that differ between certificates of one layout."""
    fields = [
        Field(("identity", "family_name"), LINE_END),
        Field(("identity", "given_names"), LINE_END),
        Field(("identity", "birth_date"), LINE_END),
        Field(("lab", "name"), LINE_END),
        Field(("lab", "finess"), LINE_END),
        Field(("test", "sampled_at"), DIGITS),
        Field(("generated_at",), DIGITS),
    ]
    for index, dcc in enumerate(context["dccs"]):
        fields += [Field(("dccs", index, "uvci"), MONOSPACE), Field(("dccs", index, "valid_until"), DIGITS)]
        if dcc["valid_from"] is not None:
            fields.append(Field(("dccs", index, "valid_from"), DIGITS))
        fields.append(Field(("dccs", index, "qr_data_uri"), IMAGE))
    return fields


def _shares_a_layout(context: dict) -> bool:
    """Whether this certificate's layout serves others: not with a measured value (a serology's
    U/mL) or a refusal quoting the patient's name, which would make a layout per certificate."""
    if context["test"]["measured"] or not fonts()["faces"]:  # without DejaVu: xhtml2pdf's fallback fonts
        return False
    withheld = " ".join((context["withheld"] or {}).values())
    names = (context["identity"]["family_name"], context["identity"]["given_names"])
    return not any(name and name in withheld for name in names)


def certificate_layouts(capacity: int = LAYOUT_CACHE_SIZE) -> Layouts:
    """An empty set of the template's layouts (the process has one, filled as certificates come)."""
    return Layouts(
        lambda context: _draw(_template().render(context)), lambda: [f["path"] for f in fonts()["faces"]], capacity
    )


@lru_cache(maxsize=1)
def _layouts() -> Layouts:
    return certificate_layouts()


def layout_pdf(certificates: CertificateSet, layouts: Layouts | None = None) -> bytes | None:
    """The PDF from its layout's drawing, or None when xhtml2pdf must draw it whole."""
    context = template_context(certificates)
    if not _shares_a_layout(context):
        return None
    images = [qr_image(dcc.hc1) for dcc in certificates.dccs]
    layouts = _layouts() if layouts is None else layouts  # (an empty one is falsy: it has a length)
    return layouts.fill(context, _fields(context), images, certificates.generated_at)


def whole_pdf(certificates: CertificateSet, qr_pngs: dict[str, bytes] | None = None) -> bytes:
    """The PDF drawn by xhtml2pdf from the template filled in."""
    return _draw(render_html(certificates, qr_pngs))


def render_pdf(certificates: CertificateSet, qr_pngs: dict[str, bytes] | None = None) -> bytes:
    """The PDF bytes; pass the QR PNGs when already made (for the Parameters output)."""
    pdf = layout_pdf(certificates) or whole_pdf(certificates, qr_pngs)
    if len(pdf) > MAX_PDF_BYTES:
        raise PdfRenderingError(f"PDF of {len(pdf)} bytes exceeds the 1 MB limit")
    return pdf
