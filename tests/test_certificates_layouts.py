"""The certificate PDF made from its layout (xhtml2pdf's drawing of the template with markers,
filled in per certificate) against the PDF xhtml2pdf draws whole: the same pages to the pixel
(poppler), each certificate with its own data and nobody else's (pdftotext), readable QR codes
(zbar), and the whole drawing whenever a value would not be laid out the same.

Needs the Debian packages poppler-utils and libzbar0."""

from __future__ import annotations

import datetime as dt
import io
import subprocess

import pytest
from PIL import Image, ImageChops
from pypdf import PdfReader
from pyzbar.pyzbar import ZBarSymbol, decode

from operations.certificates.examples import example_resources, synthetic_finess
from operations.certificates.facts import facts_from_resources
from operations.certificates.generate import issue_certificates
from operations.certificates.keys import load_keyring
from operations.certificates.pdf import MAX_PDF_BYTES, PARIS, certificate_layouts, layout_pdf, render_pdf, whole_pdf

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def keyring(tmp_path):
    return load_keyring(tmp_path / "var", environ={})


def issue(keyring, finess=None, **options):
    options.setdefault("sampled_at", NOW - dt.timedelta(hours=6))
    resources = example_resources(**options)
    if finess:
        resources["organization"]["identifier"][0]["value"] = synthetic_finess(finess)
    return issue_certificates(facts_from_resources(**resources), keyring, NOW, sheet_without_dcc=True)


def pages(pdf: bytes, directory) -> list[Image.Image]:
    directory.mkdir()
    (directory / "c.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "110", "-png", str(directory / "c.pdf"), str(directory / "p")], check=True)
    return [Image.open(p).convert("RGB") for p in sorted(directory.glob("p*.png"))]


def poppler_lines(pdf: bytes, tmp_path) -> list[str]:
    path = tmp_path / f"t{abs(hash(pdf))}.pdf"
    path.write_bytes(pdf)
    done = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True)
    assert done.stderr == b""  # poppler found nothing to complain about
    return done.stdout.decode().splitlines()


def poppler_text(pdf: bytes, tmp_path) -> str:
    """The text with its line breaks as spaces (lines wrap where the font's widths say)."""
    return " ".join(" ".join(poppler_lines(pdf, tmp_path)).split())


def qr_texts(images: list[Image.Image]) -> list[str]:
    return [s.data.decode("ascii") for image in images for s in decode(image, symbols=[ZBarSymbol.QRCODE])]


@pytest.mark.parametrize(
    "options",
    [
        dict(),  # negative RT-PCR: result sheet + test certificate
        dict(result="detected", sampled_at=NOW - dt.timedelta(days=20)),  # + recovery: 3 pages, 2 QR codes
        dict(family="Wąsowski-Žižková", given=("Łukasz", "Gergő")),  # glyphs added to the font subsets
        dict(family="N'Diaye-Œuvray", birth_date="1985-03"),  # partial birth date
        dict(lab_name="Laboratoire (site \\ Nord) & Cie"),  # PDF string delimiters
        dict(kind="antigen", device=None),  # the result sheet alone, with the reason
        dict(kind="serology", result="detected", sampled_at=NOW - dt.timedelta(days=3)),  # no DCC
    ],
)
def test_the_layout_gives_the_pages_xhtml2pdf_draws(keyring, tmp_path, options):
    certificates = issue(keyring, **options)
    from_layout = layout_pdf(certificates)
    assert from_layout is not None  # these all fit their layout
    whole = whole_pdf(certificates)
    drawn, expected = pages(from_layout, tmp_path / "layout"), pages(whole, tmp_path / "whole")
    assert len(drawn) == len(expected) == 1 + len(certificates.dccs)
    assert [ImageChops.difference(a, b).getbbox() for a, b in zip(drawn, expected, strict=True)] == [None] * len(drawn)
    assert poppler_text(from_layout, tmp_path) == poppler_text(whole, tmp_path)
    assert qr_texts(drawn) == [dcc.hc1 for dcc in certificates.dccs]
    reader = PdfReader(io.BytesIO(from_layout), strict=True)  # a valid file: cross-reference, objects
    assert len(reader.pages) == len(drawn) and reader.metadata.title.startswith("SI-DEP")
    assert len(from_layout) <= MAX_PDF_BYTES and from_layout.startswith(b"%PDF-1.4")


def test_certificates_one_after_the_other_carry_each_its_own_data(keyring, tmp_path):
    first = issue(keyring, family="Marchal", given=("Odile",), birth_date="1961-11-02", lab_name="Labo Nord")
    second = issue(
        keyring,
        finess="33012345",
        version="2",  # another UVCI
        family="Wąsowski",
        given=("Łukasz", "Jan"),
        birth_date="1999-04",
        lab_name="Laboratoire du Sud",
        sampled_at=NOW - dt.timedelta(hours=30),
    )
    texts = []
    for certificates in (first, second, first):
        pdf = render_pdf(certificates)
        assert layout_pdf(certificates) is not None  # one layout, filled three times
        texts.append(poppler_text(pdf, tmp_path))
        assert qr_texts(pages(pdf, tmp_path / f"p{len(texts)}")) == [certificates.dccs[0].hc1]

    def data(certificates) -> list[str]:
        facts, [dcc] = certificates.facts, certificates.dccs
        sampled = facts.sampled_at.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")
        return [facts.family_name, facts.given_names, facts.lab_name, facts.lab_finess, dcc.uvci, sampled]

    assert all(value in texts[1] for value in data(second) + ["04/1999"])
    assert not any(value in texts[1] for value in data(first) + ["02/11/1961"])
    assert all(value in texts[2] for value in data(first) + ["02/11/1961"])
    assert not any(value in texts[2] for value in data(second) + ["04/1999"])


def test_a_name_longer_than_its_layout_has_room_for_gets_the_whole_drawing(keyring, tmp_path):
    """The longest family name drawn from the layout is the longest xhtml2pdf keeps on one line;
    one word more, xhtml2pdf draws the certificate whole (and wraps the name)."""
    words = "Martin Lefebvre Dupont de la Fontaine Saint Exupery Montmorency Villeneuve".split()
    names = [" ".join(words[:n]) for n in range(3, len(words) + 1)]
    fits = [name for name in names if layout_pdf(issue(keyring, family=name)) is not None]
    assert fits and fits == names[: len(fits)] and len(fits) < len(names)
    longest, too_long = issue(keyring, family=fits[-1]), issue(keyring, family=names[len(fits)])

    def on_one_line(certificates) -> bool:
        name = certificates.facts.family_name
        return any(line.endswith(f"Birth name : {name}") for line in poppler_lines(render_pdf(certificates), tmp_path))

    assert on_one_line(longest) and not on_one_line(too_long)
    drawn, whole = pages(layout_pdf(longest), tmp_path / "layout"), pages(whole_pdf(longest), tmp_path / "whole")
    assert all(ImageChops.difference(a, b).getbbox() is None for a, b in zip(drawn, whole, strict=True))
    assert too_long.facts.family_name in poppler_text(render_pdf(too_long), tmp_path)


@pytest.mark.parametrize(
    "options",
    [
        dict(lab_name="Laboratoire  du\tParc"),  # spaces xhtml2pdf collapses
        dict(lab_name="Laboratoire\u00a0du Parc"),  # a no-break space
        dict(lab_name="Laboratoire " + "très " * 60 + "grand"),  # wraps
    ],
)
def test_values_xhtml2pdf_would_lay_out_otherwise_are_drawn_whole(keyring, tmp_path, options):
    certificates = issue(keyring, **options)
    assert layout_pdf(certificates) is None
    pdf = render_pdf(certificates)
    assert poppler_text(pdf, tmp_path) == poppler_text(whole_pdf(certificates), tmp_path)
    assert qr_texts(pages(pdf, tmp_path / "p")) == [certificates.dccs[0].hc1]


def test_a_measured_serology_is_drawn_whole(keyring, tmp_path):
    resources = example_resources(kind="serology", sampled_at=NOW - dt.timedelta(days=2))
    observation = resources["observation"]
    del observation["valueCodeableConcept"]
    observation["valueQuantity"] = {
        "value": 12.5,
        "unit": "U/mL",
        "system": "http://unitsofmeasure.org",
        "code": "U/mL",
    }
    observation["interpretation"] = [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "POS"}]}
    ]
    certificates = issue_certificates(facts_from_resources(**resources), load_keyring(tmp_path / "v", environ={}), NOW)
    assert layout_pdf(certificates) is None  # its value would make a layout of its own
    assert "12,5 U/mL" in poppler_text(render_pdf(certificates), tmp_path)


def test_layouts_kept_are_bounded_and_an_evicted_one_is_drawn_again(keyring, tmp_path):
    layouts = certificate_layouts(capacity=1)
    negative = issue(keyring, family="Marchal")
    positive = issue(keyring, family="Roussel", result="detected", sampled_at=NOW - dt.timedelta(days=20))
    for turn, certificates in enumerate((negative, positive, negative)):
        pdf = layout_pdf(certificates, layouts)
        assert len(layouts) == 1
        assert certificates.facts.family_name in poppler_text(pdf, tmp_path)
        assert qr_texts(pages(pdf, tmp_path / f"turn{turn}")) == [dcc.hc1 for dcc in certificates.dccs]
