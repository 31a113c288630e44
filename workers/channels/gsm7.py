"""How long an SMS text is, by the rules of GSM 03.38 (3GPP TS 23.038).

A text made only of the basic character set and its extension table travels in the 7-bit default
alphabet (GSM-7): 160 septets in one SMS, an extension character (€ [ ] { } \\ ^ ~ | and form feed)
taking two (an escape, then its code). One character outside them and the whole text travels as
UCS-2: 70 UTF-16 code units in one SMS. A longer text is split into several SMS, which costs more
and may arrive out of order or not at all, so the platform's notification must fit in one: the
template is checked when the gateway is configured, with the longest link it can carry.
"""

from __future__ import annotations

GSM7 = "GSM-7"
UCS2 = "UCS-2"
SINGLE_LIMITS = {GSM7: 160, UCS2: 70}

# The basic character set, in code order 0x00-0x7F; 0x1B is the escape to the extension table,
# not a character (it stands here as a placeholder that no text contains).
_ESCAPE = "\x1b"
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00
    "Δ_ΦΓΛΩΠΨΣΘΞ" + _ESCAPE + "ÆæßÉ"  # 0x10
    " !\"#¤%&'()*+,-./"  # 0x20
    "0123456789:;<=>?"  # 0x30
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"  # 0x40
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"  # 0x60
)
# The extension table: each is sent as escape + code, two septets.
EXTENSION = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_BASIC_SET = frozenset(BASIC) - {_ESCAPE}
assert len(BASIC) == 128


def outside_gsm7(text: str) -> list[str]:
    """The distinct characters of `text` that GSM-7 cannot carry, in order of appearance."""
    seen: dict[str, None] = {}
    for char in text:
        if char not in _BASIC_SET and char not in EXTENSION:
            seen.setdefault(char)
    return list(seen)


def encoding(text: str) -> str:
    """ "GSM-7" when every character is in the basic set or the extension table, else "UCS-2"."""
    return UCS2 if outside_gsm7(text) else GSM7


def units(text: str) -> int:
    """Septets for GSM-7 (two for an extension character), UTF-16 code units for UCS-2 (two for a
    character beyond the Basic Multilingual Plane, an emoji say)."""
    if encoding(text) == GSM7:
        return sum(2 if char in EXTENSION else 1 for char in text)
    return len(text.encode("utf-16-le")) // 2


def fits_one_sms(text: str) -> bool:
    return units(text) <= SINGLE_LIMITS[encoding(text)]


def check_template(template: str, link: str) -> None:
    """Raise ValueError, saying why, unless `template` has a `{link}` placeholder and, with `link`
    in it, fits one SMS."""
    if "{link}" not in template:
        raise ValueError("SMS template has no {link} placeholder: the message would not carry the link")
    try:
        text = template.format(link=link)
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"SMS template is not a valid format string with only {{link}}: {error!r}") from None
    if fits_one_sms(text):
        return
    used, limit = units(text), SINGLE_LIMITS[encoding(text)]
    message = f"SMS template does not fit one SMS: {used} {encoding(text)} units with a {len(link)}-character link, limit {limit}"
    forcing = outside_gsm7(text)
    if forcing:
        message += f"; UCS-2 because of {', '.join(repr(char) for char in forcing)} (outside GSM 03.38)"
    raise ValueError(message)
