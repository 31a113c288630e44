"""QR PNG and PDF: read back with real readers (zbar for the QR, poppler's pdftoppm to rasterise
the PDF, pypdf for its text), then verified with the published trust list only.

Needs the Debian packages libzbar0 and poppler-utils."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
from zoneinfo import ZoneInfo

import pytest
from PIL import Image
from pypdf import PdfReader
from pyzbar.pyzbar import ZBarSymbol, decode

from operations.certificates.examples import example_resources
from operations.certificates.facts import facts_from_resources
from operations.certificates.generate import issue_certificates
from operations.certificates.hcert import decode_and_verify
from operations.certificates.keys import load_keyring
from operations.certificates.pdf import MAX_PDF_BYTES, render_pdf
from operations.certificates.qr import qr_matrix, qr_png
from operations.certificates.trustlist import trust_list
from tests.test_certificates_hcert import verify_with_pycose

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def keyring(tmp_path):
    return load_keyring(tmp_path / "var", environ={})


def issue(keyring, **options):
    return issue_certificates(facts_from_resources(**example_resources(**options)), keyring, NOW)


def qr_texts(image: Image.Image) -> list[str]:
    return [symbol.data.decode("ascii") for symbol in decode(image, symbols=[ZBarSymbol.QRCODE])]


def pdf_pages_as_images(pdf: bytes, tmp_path) -> list[Image.Image]:
    assert shutil.which("pdftoppm"), "poppler-utils is required"
    (tmp_path / "c.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "110", "-png", str(tmp_path / "c.pdf"), str(tmp_path / "page")], check=True)
    return [Image.open(p) for p in sorted(tmp_path.glob("page*.png"))]


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_qr_png_decodes_to_the_hc1_string_which_verifies(keyring):
    dcc = issue(keyring, sampled_at=NOW - dt.timedelta(hours=6)).dccs[0]
    png = qr_png(dcc.hc1)
    assert png.startswith(b"\x89PNG")
    [text] = qr_texts(Image.open(io.BytesIO(png)))
    assert text == dcc.hc1
    claims = verify_with_pycose(text, trust_list(keyring))
    assert claims[-260][1] == dcc.payload


def test_qr_uses_error_correction_level_q(keyring):
    dcc = issue(keyring, sampled_at=NOW - dt.timedelta(hours=6)).dccs[0]
    matrix = qr_matrix(dcc.hc1)
    # Format information beside the top-left finder: row 8, columns 0-1 (after the quiet zone)
    # hold its two most significant bits, the level (Q = 11), XOR-masked with 1 0 (ISO 18004).
    quiet = 4
    bits = [matrix[quiet + 8][quiet + c] for c in (0, 1)]
    mask = [True, False]
    assert [b != m for b, m in zip(bits, mask, strict=True)] == [True, True]


@pytest.mark.parametrize(
    "options, pages, wording",
    [
        (dict(result="not-detected", sampled_at=NOW - dt.timedelta(hours=6)), 2, "en deçà de 72 heures"),
        (dict(result="detected", sampled_at=NOW - dt.timedelta(days=20)), 3, "+ de 15 jours & - de 6 mois"),
    ],
)
def test_pdf_has_the_forms_identity_wording_and_readable_qr(keyring, tmp_path, options, pages, wording):
    certificates = issue(keyring, family="N'Diaye-Œuvray", given=("Françoise-Hélène",), **options)
    pdf = render_pdf(certificates)
    assert pdf.startswith(b"%PDF") and len(pdf) <= MAX_PDF_BYTES
    text = " ".join(pdf_text(pdf).split())  # lines wrap where the font's widths say
    for expected in [
        "Fiche de résultat",
        "Certificat numérique européen",
        "N'Diaye-Œuvray",
        "Françoise-Hélène",
        "07/03/1985",
        "Laboratoire Synthétique du Parc",
        certificates.facts.lab_finess,
        wording,
        "Exemples de règle de validité",
        "heure de Paris",
        "Birth name",
        "Test result sheet",
        certificates.dccs[0].uvci,
    ]:
        assert expected in text, expected
    images = pdf_pages_as_images(pdf, tmp_path)
    assert len(images) == pages
    assert qr_texts(images[0]) == []  # the result sheet carries no DCC
    decoded = [text for image in images[1:] for text in qr_texts(image)]
    assert decoded == [d.hc1 for d in certificates.dccs]
    published = trust_list(keyring)
    for hc1 in decoded:
        verify_with_pycose(hc1, published)
        decode_and_verify(hc1, published, now=NOW)


def test_pdf_shows_sampling_time_in_paris_time(keyring):
    # Stored with a +05:00 offset: the PDF must show it in Paris time whatever the offset.
    sampled = (NOW - dt.timedelta(hours=7)).astimezone(dt.timezone(dt.timedelta(hours=5)))
    certificates = issue(keyring, sampled_at=sampled)
    paris = sampled.astimezone(ZoneInfo("Europe/Paris")).strftime("%d/%m/%Y %H:%M")
    assert f"{paris} (heure de Paris" in pdf_text(render_pdf(certificates))


def test_serology_pdf_is_a_result_sheet_without_qr(keyring, tmp_path):
    certificates = issue(keyring, kind="serology", result="detected", sampled_at=NOW - dt.timedelta(days=3))
    pdf = render_pdf(certificates)
    text = pdf_text(pdf)
    assert "Fiche de résultat" in text and "Test sérologique" in text
    assert "ne donne pas lieu à un certificat numérique européen" in text
    images = pdf_pages_as_images(pdf, tmp_path)
    assert len(images) == 1 and qr_texts(images[0]) == []


@pytest.mark.parametrize("length", [1, 2, 7, 120, 511, 655, 1000, 1663])
def test_fast_codewords_and_matrix_equal_qrcode_reference(length):
    import random

    import qrcode
    from qrcode import util
    from qrcode.constants import ERROR_CORRECT_Q

    from operations.certificates.qr import FIXED_MASK_PATTERN, _alphanumeric_version, codewords

    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
    rng = random.Random(f"qr-{length}")
    text = ("HC1:" + "".join(rng.choice(alphabet) for _ in range(length)))[:length]
    version = _alphanumeric_version(length)
    reference = util.create_data(version, ERROR_CORRECT_Q, [util.QRData(text, mode=util.MODE_ALPHA_NUM)])
    assert codewords(text, version) == list(reference)
    code = qrcode.QRCode(version=version, error_correction=ERROR_CORRECT_Q, border=4, mask_pattern=FIXED_MASK_PATTERN)
    code.add_data(text, optimize=0)
    code.make(fit=False)
    assert qr_matrix(text) == code.get_matrix()


def test_pdf_wraps_long_names_and_laboratory_without_losing_text(keyring, tmp_path):
    family = "de la Fontaine-Saint-Exupéry Montmorency-Laval d'Aubigné-Villeneuve"
    given = ("Marie-Françoise Anne-Sophie Geneviève",)
    lab = "Laboratoire de Biologie Médicale Multi-Sites du Grand Hôpital & Associés"
    certificates = issue(
        keyring, family=family, given=given, lab_name=lab, result="detected", sampled_at=NOW - dt.timedelta(days=20)
    )
    pdf = render_pdf(certificates)
    words = " ".join(pdf_text(pdf).split())  # wrapped lines joined
    for expected in (family, given[0], lab, certificates.dccs[1].uvci):
        assert expected in words, expected
    images = pdf_pages_as_images(pdf, tmp_path)
    assert len(images) == 3
    assert [t for image in images[1:] for t in qr_texts(image)] == [d.hc1 for d in certificates.dccs]
