"""Known-good and known-bad values for each validator (profiles/validators.py)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from profiles import validators as v


def severities(issues):
    return [i.severity for i in issues]


# --- NIR / NIA ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "nir",
    [
        "180127512345642",  # mainland
        "253072A07300443",  # Corsica, 2A -> 19
        "253072B07300470",  # Corsica, 2B -> 18
        "295109912611193",  # born abroad (99)
    ],
)
def test_valid_nirs_pass(nir):
    assert v.check_nir(nir, "Patient.identifier[0].value") == []
    assert v.is_valid_nir(nir)


def test_nir_key_is_97_minus_body_mod_97_with_corsican_substitution():
    assert v.nir_key("1801275123456") == 97 - 1801275123456 % 97 == 42
    assert v.nir_key("253072A073004") == 97 - 2530719073004 % 97 == 43
    assert v.nir_key("253072B073004") == 97 - 2530718073004 % 97 == 70


@pytest.mark.parametrize(
    "nir, fragment",
    [
        ("180127512345643", "control key"),  # wrong key
        ("253072A07300470", "control key"),  # the 2B key on a 2A number
        ("253072B07300443", "control key"),  # the 2A key on a 2B number
        ("1 80 12 75 123 456 42", "15 characters"),  # separators
        ("18012751234564", "15 characters"),  # too short
        ("253072C07300443", "15 characters"),  # 2C is no département
        ("980127512345642", "15 characters"),  # first digit 9
        ("180127512345642\n", "15 characters"),  # trailing newline
    ],
)
def test_bad_nirs_are_errors_with_location(nir, fragment):
    issues = v.check_nir(nir, "Patient.identifier[0].value")
    assert severities(issues) == ["error"]
    assert fragment in issues[0].en
    assert issues[0].fr and issues[0].fr != issues[0].en
    assert issues[0].expression == ["Patient.identifier[0].value"]


def test_wrong_nir_key_message_does_not_reveal_the_expected_key():
    issues = v.check_nir("180127512345600", "x")
    assert "42" not in issues[0].en and "42" not in issues[0].fr


def test_nia_uses_the_same_key():
    body = "7951099126111"
    key = v.nir_key(body)
    assert v.check_nia(f"{body}{key:02d}", "x") == []
    issues = v.check_nia(f"{body}{(key % 97) + 1:02d}", "x")
    assert severities(issues) == ["error"] and "NIA" in issues[0].en


def test_missing_nir_is_required():
    issues = v.check_nir(None, "p")
    assert issues[0].code == "required"


# --- FINESS, RPPS ---------------------------------------------------------------------------------
@pytest.mark.parametrize("finess", ["750712184", "130786049", "690781810", "010003820", "010003812"])
def test_real_finess_numbers_pass_luhn(finess):
    assert v.check_finess(finess, "Organization.identifier[0].value") == []
    assert v.is_valid_finess(finess)


@pytest.mark.parametrize(
    "finess, code",
    [("310780260", "value"), ("75071218", "value"), ("7507121845", "value"), ("75071218A", "value"), ("", "required")],
)
def test_bad_finess_numbers_are_errors(finess, code):
    issues = v.check_finess(finess, "Organization.identifier[0].value")
    assert severities(issues) == ["error"] and issues[0].code == code


def test_corsican_finess_is_accepted_with_a_warning():
    assert severities(v.check_finess("2A0000017", "x")) == ["warning"]


def test_rpps_has_11_digits_and_a_luhn_warning():
    from stdnum import luhn

    good = "1000000000" + luhn.calc_check_digit("1000000000")
    assert v.check_rpps(good, "x") == []
    bad_key = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert severities(v.check_rpps(bad_key, "x")) == ["warning"]
    assert severities(v.check_rpps("1234567890", "x")) == ["error"]
    assert severities(v.check_rpps("1234567890A", "x")) == ["error"]


# --- phone numbers: the guide's examples ------------------------------------------------------------
@pytest.mark.parametrize(
    "phone, e164",
    [
        ("0612345678", "+33612345678"),
        ("0658123456", "+33658123456"),
        ("0751234567", "+33751234567"),
        ("+33612345678", "+33612345678"),
        ("+33751234567", "+33751234567"),
        ("+447400123456", "+447400123456"),  # the guide's "+44XXXXXXXXXX"
        ("+4915123456789", "+4915123456789"),
        ("0692123456", "+262692123456"),  # Réunion mobile written nationally
    ],
)
def test_guide_conformant_phones_pass_and_normalise_to_e164(phone, e164):
    assert v.check_phone(phone, "Patient.telecom[0].value") == []
    assert v.phone_to_e164(phone) == e164


@pytest.mark.parametrize(
    "phone, fragment",
    [
        ("0044740012345", "not '00'"),  # the guide: 0044... is invalid
        ("+33612345678"[:3] + "0612345678", "+3306"),  # +3306... is invalid
        ("+330712345678", "+3307"),
        ("06.12.34.56.78", "separators"),
        ("06-12-34-56-78", "separators"),
        ("06/12/34/56/78", "separators"),
        ("06 12 34 56 78", "separators"),
        ("+33 6 12 34 56 78", "separators"),
        ("061234567", "8 digits"),  # 7 digits after 06
        ("06123456789", "8 digits"),  # 9 digits after 06
        ("0145678901", "mobile"),  # a French landline cannot receive the SMS
        ("612345678", "starts with"),
        ("+12", "7 to 15 digits"),
    ],
)
def test_phones_breaking_the_guide_are_errors(phone, fragment):
    issues = v.check_phone(phone, "Patient.telecom[0].value")
    assert severities(issues) == ["error"], issues
    assert fragment in issues[0].en
    assert issues[0].expression == ["Patient.telecom[0].value"]
    assert issues[0].fr


def test_plausible_format_but_unallocated_number_is_a_warning():
    issues = v.check_phone("0712345678", "p")  # 07 1x is not an allocated mobile range
    assert severities(issues) == ["warning"]
    assert v.phone_to_e164("0712345678") == "+33712345678"


def test_landline_is_only_a_warning_when_declared_home_or_work():
    assert severities(v.check_phone("0145678901", "p", mobile_required=False)) == ["warning"]
    contact = {"system": "phone", "use": "home", "value": "0145678901"}
    assert severities(v.VALIDATORS["sidep-contact-point"](contact, "Patient.telecom[0]", {})) == ["warning"]
    contact["use"] = "mobile"
    assert severities(v.VALIDATORS["sidep-contact-point"](contact, "Patient.telecom[0]", {})) == ["error"]


def test_phone_to_e164_leaves_rule_breakers_alone():
    assert v.phone_to_e164("06.12.34.56.78") is None
    assert v.phone_to_e164("0044740012345") is None


# --- e-mail, dates, names ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "email", ["jean.dupont@example.fr", "elodie.lefevre+sidep@example.com", "o'brien@example.org", "zoé@example.fr"]
)
def test_valid_emails(email):
    assert v.check_email(email, "Patient.telecom[1].value") == []


@pytest.mark.parametrize(
    "email",
    ["jean.dupont", "jean@dupont", "jean dupont@example.fr", "a..b@example.fr", "@example.fr", "jean@@example.fr"],
)
def test_invalid_emails(email):
    issues = v.check_email(email, "Patient.telecom[1].value")
    assert severities(issues) == ["error"] and issues[0].expression == ["Patient.telecom[1].value"]


def test_birth_date_rules():
    today = date(2024, 6, 30)
    assert v.check_birth_date("1980-12-01", "Patient.birthDate", today) == []
    assert severities(v.check_birth_date("2024-07-01", "Patient.birthDate", today)) == ["error"]
    assert severities(v.check_birth_date("2024-02-30", "Patient.birthDate", today)) == ["error"]
    assert severities(v.check_birth_date("01/12/1980", "Patient.birthDate", today)) == ["error"]
    assert severities(v.check_birth_date("1980", "Patient.birthDate", today)) == ["warning"]
    assert severities(v.check_birth_date("1880-01-01", "Patient.birthDate", today)) == ["warning"]


def test_not_future_allows_clock_skew_only():
    now = datetime(2024, 6, 30, 12, tzinfo=UTC)
    assert v.check_not_future((now + timedelta(minutes=5)).isoformat(), "x", now) == []
    assert severities(v.check_not_future((now + timedelta(hours=2)).isoformat(), "x", now)) == ["error"]
    assert severities(v.check_not_future("2024-13-01T00:00:00Z", "x", now)) == ["error"]


def test_names_present_and_plausible():
    assert v.check_human_name({"family": "Gauthier-Lévêque", "given": ["Marie-Hélène", "Zoé"]}, "Patient.name[0]") == []
    assert v.check_human_name({"family": "N'Diaye", "given": ["Aïcha"]}, "Patient.name[0]") == []
    issues = v.check_human_name({"family": "  ", "given": []}, "Patient.name[0]")
    assert [i.expression[0] for i in issues] == ["Patient.name[0].family", "Patient.name[0].given"]
    assert severities(v.check_human_name({"family": "Dupont3", "given": ["Jean"]}, "Patient.name[0]")) == ["warning"]


def test_cog_code():
    for code in ("75056", "2A004", "2B033", "97411", "99350"):
        assert v.check_cog_code(code, "x") == []
    for code in ("7505", "2C004", "750561", None):
        assert severities(v.check_cog_code(code, "x")) == ["error"]


def test_identifier_dispatch_by_system():
    check = v.VALIDATORS["sidep-identifier"]
    assert check({"system": v.INS_NIR, "value": "253072B07300470"}, "Patient.identifier[0]", {}) == []
    bad = check({"system": v.INS_NIR_TEST, "value": "253072B07300471"}, "Patient.identifier[1]", {})
    assert bad[0].expression == ["Patient.identifier[1].value"]
    assert check({"system": v.FINESS_OLD, "value": "750712184"}, "x", {}) == []
    assert severities(check({"system": v.IDNAT_STRUCT, "value": "1310780260"}, "x", {})) == ["error"]
    assert check({"system": "https://example.org/ipp", "value": "anything"}, "x", {}) == []
