"""The printable certificate (PDF, at most 1 MB): the two forms of the SI-DEP guide, bilingual.

Page 1, "Fiche de résultat": identity, test, result, sampling time (Europe/Paris), laboratory and
the validity wording. Then one "Certificat numérique européen" page per DCC (test, recovery) with
its QR code. Serology and inconclusive results have the result sheet only.

Drawn with ReportLab directly: a cursor going down the page, ReportLab paragraphs for the text
(they wrap long names and mix roman, bold and italic), fonts are the PDF standard ones (nothing to
embed, small files). It used to be an HTML template converted by xhtml2pdf, which spent ~45 ms a
document parsing HTML and CSS and laying out tables, 3x the rest of the issuing path; the target
is 20 PDF/s on one core. The QR code is drawn as vector squares (one filled path), sharp at any
printing resolution, instead of a PNG that ReportLab decoded and recompressed as RGB (~5 ms).
"""
from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab import rl_config
from reportlab.lib.colors import HexColor, white
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph

from .facts import loinc_table
from .generate import CertificateSet, IssuedDcc
from .qr import qr_rows

PARIS = ZoneInfo("Europe/Paris")
MAX_PDF_BYTES = 1024 * 1024
QR_SIZE_PT = 220
_HERE = Path(__file__).parent

# Binary streams are valid PDF; ASCII85 only makes files bigger and slower to write.
rl_config.useA85 = 0

# ---- page geometry and styles (the SI-DEP blue, body text 10 pt Helvetica) --------------------

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN_LEFT = MARGIN_RIGHT = MARGIN_TOP = 1.6 * cm
MARGIN_BOTTOM = 1.4 * cm
CONTENT_WIDTH = PAGE_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
LABEL_SHARE = 0.42  # of the content width, for the label column of the field tables
CELL_PADDING_X, CELL_PADDING_Y = 3, 2
BOX_PADDING = 5
BLUE, GREY, LABEL_GREY = HexColor("#000091"), HexColor("#555555"), HexColor("#333333")
ENGLISH = '<font color="#555555"><i>{}</i></font>'  # the English half of bilingual text

_BODY = ParagraphStyle("body", fontName="Helvetica", fontSize=10, leading=12.5,
                       textColor=HexColor("#111111"))
STYLES = {
    "body": _BODY,
    "banner": ParagraphStyle("banner", _BODY, fontSize=9, leading=11, textColor=white),
    "h1": ParagraphStyle("h1", _BODY, fontName="Helvetica-Bold", fontSize=17, leading=20,
                         textColor=BLUE),
    "sub": ParagraphStyle("sub", _BODY, fontSize=11, leading=14, textColor=GREY),
    "h2": ParagraphStyle("h2", _BODY, fontName="Helvetica-Bold", fontSize=11, leading=14,
                         textColor=BLUE),
    "label": ParagraphStyle("label", _BODY, textColor=LABEL_GREY),
    "value": ParagraphStyle("value", _BODY, fontName="Helvetica-Bold"),
    "result": ParagraphStyle("result", _BODY, fontName="Helvetica-Bold", fontSize=13,
                             leading=16),
    "english": ParagraphStyle("english", _BODY, fontName="Helvetica-Oblique", textColor=GREY),
    "note": ParagraphStyle("note", _BODY, fontSize=8, leading=10, textColor=GREY),
    "uvci": ParagraphStyle("uvci", _BODY, fontName="Courier", fontSize=8, leading=10,
                           alignment=TA_CENTER),
}


class PdfRenderingError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def wording() -> dict:
    return json.loads((_HERE / "wording.json").read_text(encoding="utf-8"))


def french_date(value: str | dt.date) -> str:
    """'1985-03-07' -> '07/03/1985'; partial dates keep what they have ('1985-03' -> '03/1985')."""
    parts = str(value).split("-")
    return "/".join(reversed(parts))


def paris_time(moment: dt.datetime) -> str:
    return moment.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")


def bilingual(french: str, english: str) -> str:
    """Paragraph markup of 'French / English', the English in grey italics (text escaped)."""
    return f"{escape(french)} {ENGLISH.format('/ ' + escape(english))}"


# ---- drawing ------------------------------------------------------------------------------------

class _Page:
    """A cursor going down the page; content that does not fit continues on a new page."""

    def __init__(self, canvas: Canvas):
        self.canvas = canvas
        self.y = PAGE_HEIGHT - MARGIN_TOP

    def new_page(self) -> None:
        self.canvas.showPage()
        self.y = PAGE_HEIGHT - MARGIN_TOP

    def room_for(self, height: float) -> None:
        if self.y - height < MARGIN_BOTTOM and self.y < PAGE_HEIGHT - MARGIN_TOP:
            self.new_page()

    def paragraph(self, markup: str, style: str, space_after: float = 0) -> None:
        para = Paragraph(markup, STYLES[style])
        _, height = para.wrap(CONTENT_WIDTH, PAGE_HEIGHT)
        self.room_for(height)
        para.drawOn(self.canvas, MARGIN_LEFT, self.y - height)
        self.y -= height + space_after

    def banner(self, markup: str) -> None:
        para = Paragraph(markup, STYLES["banner"])
        _, height = para.wrap(CONTENT_WIDTH - 12, PAGE_HEIGHT)
        self.canvas.setFillColor(BLUE)
        self.canvas.rect(MARGIN_LEFT, self.y - height - 8, CONTENT_WIDTH, height + 8,
                         stroke=0, fill=1)
        para.drawOn(self.canvas, MARGIN_LEFT + 6, self.y - height - 4)
        self.y -= height + 8 + 6

    def heading(self, markup: str) -> None:
        """h2: blue, underlined with a thin blue rule."""
        self.y -= 10
        self.paragraph(markup, "h2")
        self.canvas.setStrokeColor(BLUE)
        self.canvas.setLineWidth(0.5)
        self.canvas.line(MARGIN_LEFT, self.y - 1, MARGIN_LEFT + CONTENT_WIDTH, self.y - 1)
        self.y -= 5

    def fields(self, rows: list[tuple[str, str]]) -> None:
        """Label / value table: labels in the left 42%, values in bold beside them."""
        label_width = CONTENT_WIDTH * LABEL_SHARE
        for label, value in rows:
            left, right = Paragraph(label, STYLES["label"]), Paragraph(value, STYLES["value"])
            _, left_height = left.wrap(label_width - 2 * CELL_PADDING_X, PAGE_HEIGHT)
            _, right_height = right.wrap(CONTENT_WIDTH - label_width - 2 * CELL_PADDING_X,
                                         PAGE_HEIGHT)
            height = max(left_height, right_height) + 2 * CELL_PADDING_Y
            self.room_for(height)
            top = self.y - CELL_PADDING_Y
            left.drawOn(self.canvas, MARGIN_LEFT + CELL_PADDING_X, top - left_height)
            right.drawOn(self.canvas, MARGIN_LEFT + label_width + CELL_PADDING_X,
                         top - right_height)
            self.y -= height

    def box(self, paragraphs: list[tuple[str, str]]) -> None:
        """Paragraphs in a blue frame (the validity wording)."""
        inner = CONTENT_WIDTH - 2 * BOX_PADDING
        laid = [Paragraph(markup, STYLES[style]) for markup, style in paragraphs]
        heights = [para.wrap(inner, PAGE_HEIGHT)[1] for para in laid]
        gap = 6
        height = sum(heights) + gap * (len(laid) - 1) + 2 * BOX_PADDING
        self.y -= 10
        self.room_for(height)
        self.canvas.setStrokeColor(BLUE)
        self.canvas.setLineWidth(1)
        self.canvas.rect(MARGIN_LEFT, self.y - height, CONTENT_WIDTH, height, stroke=1, fill=0)
        y = self.y - BOX_PADDING
        for para, para_height in zip(laid, heights):
            para.drawOn(self.canvas, MARGIN_LEFT + BOX_PADDING, y - para_height)
            y -= para_height + gap
        self.y -= height + 6

    def qr(self, rows: tuple[tuple[bool, ...], ...], size: float = QR_SIZE_PT) -> None:
        """The QR code (quiet zone included) centred, as vector squares: one path of one
        rectangle per horizontal run of dark modules, filled once (no seams between them)."""
        self.y -= 8
        self.room_for(size)
        operators = []
        for row_index, row in enumerate(rows):
            y = len(rows) - 1 - row_index  # PDF y goes up
            start = None
            for column, dark in enumerate(row + (False,)):
                if dark and start is None:
                    start = column
                elif not dark and start is not None:
                    operators.append(f"{start} {y} {column - start} 1 re")
                    start = None
        module = size / len(rows)
        canvas = self.canvas
        canvas.saveState()
        canvas.translate(MARGIN_LEFT + (CONTENT_WIDTH - size) / 2, self.y - size)
        canvas.scale(module, module)
        canvas.setFillColorRGB(0, 0, 0)
        canvas.addLiteral("\n".join(operators) + "\nf")
        canvas.restoreState()
        self.y -= size + 4


# ---- the two forms ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sheet:
    """What both forms show, as paragraph markup."""
    identity: list[tuple[str, str]]
    test: list[tuple[str, str]]
    validity: list[tuple[str, str]] | None  # box paragraphs; None when there is no DCC


def _sheet(certificates: CertificateSet) -> _Sheet:
    facts, words = certificates.facts, wording()
    kind = loinc_table()["kinds"][facts.test_kind]
    result = words["results"][facts.result]
    identity = [
        (bilingual("Nom de naissance", "Birth name"), escape(facts.family_name or "")),
        (bilingual("Prénom(s)", "Given name(s)"), escape(facts.given_names or "")),
        (bilingual("Date de naissance", "Date of birth"), french_date(facts.birth_date)),
    ]
    test = [
        (bilingual("Type de test", "Test type"),
         f"{bilingual(kind['label_fr'], kind['label_en'])} (LOINC {escape(facts.loinc)})"),
        (bilingual("Résultat", "Result"), bilingual(result["fr"], result["en"])),
        (bilingual("Date et heure du prélèvement", "Sampling date and time"),
         f"{paris_time(facts.sampled_at)} (heure de Paris / Paris time)"),
        (bilingual("Laboratoire", "Laboratory"), escape(facts.lab_name or "-")),
        ("FINESS", escape(facts.lab_finess or "-")),
    ]
    validity = words["validity"].get(facts.result) if certificates.dccs else None
    footnote = words["validity"]["footnote"]
    box = [(escape(validity["fr"]), "result"), (escape(validity["en"]), "english"),
           (f"{escape(footnote['fr'])}<br/>{escape(footnote['en'])}", "note")] if validity else None
    return _Sheet(identity, test, box)


def _result_sheet(page: _Page, certificates: CertificateSet, sheet: _Sheet) -> None:
    no_dcc = wording()["validity"]["no_dcc"]
    generated = paris_time(certificates.generated_at)
    page.banner("SI-DEP - Système d'information national de dépistage populationnel / "
                "French national screening information system")
    page.paragraph("Fiche de résultat", "h1", space_after=2)
    page.paragraph("Test result sheet - COVID-19", "sub", space_after=8)
    page.heading("Identité / Identity")
    page.fields(sheet.identity)
    page.heading("Test / Test")
    page.fields(sheet.test)
    page.box(sheet.validity or [(escape(no_dcc["fr"]), "body"), (escape(no_dcc["en"]), "english")])
    page.paragraph(f"Document généré le {generated} (heure de Paris) à partir des données "
                   f"transmises par le laboratoire. / Document generated on {generated} (Paris "
                   f"time) from the data sent by the laboratory.", "note")


def _dcc_page(page: _Page, dcc: IssuedDcc, sheet: _Sheet) -> None:
    label = wording()["certificate_types"][dcc.type]
    page.banner("SI-DEP - Union européenne / European Union")
    page.paragraph("Certificat numérique européen", "h1", space_after=2)
    page.paragraph(escape(f"EU Digital COVID Certificate - {label['fr']} / {label['en']}"), "sub",
                   space_after=8)
    page.qr(qr_rows(dcc.hc1))
    page.paragraph(escape(dcc.uvci), "uvci")
    page.heading("Identité / Identity")
    page.fields(sheet.identity)
    page.heading("Test / Test")
    page.fields(sheet.test)
    if dcc.type == "recovery":
        recovery = dcc.payload["r"][0]
        page.fields([(bilingual("Valide du", "Valid from"), french_date(recovery["df"])),
                     (bilingual("Valide jusqu'au", "Valid until"), french_date(recovery["du"]))])
    page.box(sheet.validity)


def render_pdf(certificates: CertificateSet, qr_pngs: dict[str, bytes] | None = None) -> bytes:
    """The PDF bytes. `qr_pngs` is accepted for callers that made the PNGs already; the PDF
    draws the QR from the same (cached) module matrix instead of embedding the image."""
    facts = certificates.facts
    output = io.BytesIO()
    canvas = Canvas(output, pagesize=A4, pageCompression=1)
    canvas.setTitle(f"SI-DEP - {facts.family_name or ''} {facts.given_names or ''}".strip())
    canvas.setAuthor("SI-DEP")
    sheet = _sheet(certificates)
    page = _Page(canvas)
    _result_sheet(page, certificates, sheet)
    for dcc in certificates.dccs:
        page.new_page()
        _dcc_page(page, dcc, sheet)
    canvas.showPage()
    canvas.save()
    pdf = output.getvalue()
    if len(pdf) > MAX_PDF_BYTES:
        raise PdfRenderingError(f"PDF of {len(pdf)} bytes exceeds the 1 MB limit")
    return pdf
