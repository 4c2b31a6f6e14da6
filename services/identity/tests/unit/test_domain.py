"""Identity rules: what an email and a password must be, and refresh-token rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from souq_identity.domain import (
    MAX_EMAIL_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    InvalidEmail,
    InvalidPassword,
    Redemption,
    RefreshToken,
    check_password,
    normalize_email,
    redeem,
    refresh_token_digest,
    roles_of_text,
    roles_text,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def token(**changes: object) -> RefreshToken:
    fields: dict[str, object] = {
        "token_hash": "0" * 64,
        "family_id": "f" * 32,
        "user_id": "u-1",
        "issued_at": NOW - timedelta(hours=1),
        "expires_at": NOW + timedelta(days=1),
        **changes,
    }
    return RefreshToken(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Amina@Example.COM", "amina@example.com"),
        ("  amina@example.com\t\n", "amina@example.com"),
        ("first.last+souq@mail.example.co.uk", "first.last+souq@mail.example.co.uk"),
    ],
)
def test_emails_are_trimmed_and_lower_cased(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "amina",
        "amina@",
        "@example.com",
        "amina@example",
        "amina@example.",
        "am ina@example.com",
        "amina@@example.com",
        "amina@exa@mple.com",
    ],
)
def test_malformed_emails_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalize_email(raw)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("\uff41\uff44\uff4d\uff49\uff4e@souq.local", "admin@souq.local"),  # full-width
        ("\uff21\uff44\uff4d\uff49\uff4e\uff20\uff53\uff4f\uff55\uff51.local", "admin@souq.local"),
        ("\u3000admin@souq.local\u3000", "admin@souq.local"),  # ideographic spaces, trimmed
        ("\ufb01le@example.com", "file@example.com"),  # the ligature fi
    ],
)
def test_emails_are_compared_in_unicode_compatibility_form(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    "hidden", ["\u202e", "\u2066", "\u200b", "\u200c", "\u200d", "\ufeff", "\x00", "\x1b", "\ue000"]
)
def test_emails_with_control_format_or_invisible_characters_are_rejected(hidden: str) -> None:
    with pytest.raises(InvalidEmail, match="control, format or invisible"):
        normalize_email(f"ad{hidden}min@souq.local")


@pytest.mark.parametrize(
    "lookalike",
    [
        "\u0430dmin@souq.local",  # Cyrillic a
        "admin@s\u03bfuq.local",  # Greek omicron
        "adm\u0131n@souq.local",  # dotless i
        "admi\u0307n@souq.local",  # i with a combining dot above
        "adm\u3164in@souq.local",  # Hangul filler, a letter that shows nothing
        "adm\uffa0in@souq.local",  # half-width Hangul filler
        "adm\u2800in@souq.local",  # braille blank
        "adm\u034fin@souq.local",  # combining grapheme joiner
        "admin\ufe0f@souq.local",  # variation selector
        "caf\u00e9@example.com",  # an honest accent is refused too: ASCII addresses only
    ],
)
def test_addresses_outside_ascii_are_refused_so_none_looks_like_another(lookalike: str) -> None:
    with pytest.raises(InvalidEmail, match="ASCII"):
        normalize_email(lookalike)


@pytest.mark.parametrize(
    "raw",
    ['"admin"@souq.local', "admin.@souq.local", ".admin@souq.local", "admin@-souq.local"],
)
def test_quoted_and_dotted_oddities_are_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalize_email(raw)


def test_an_email_may_be_254_characters_and_no_more() -> None:
    domain = "@example.com"
    longest = "a" * (MAX_EMAIL_LENGTH - len(domain)) + domain
    assert normalize_email(longest) == longest
    with pytest.raises(InvalidEmail):
        normalize_email("a" + longest)


def test_the_length_limit_applies_after_trimming() -> None:
    domain = "@example.com"
    longest = "a" * (MAX_EMAIL_LENGTH - len(domain)) + domain
    assert normalize_email(f"   {longest}   ") == longest


def test_passwords_of_8_to_128_characters_are_accepted() -> None:
    for length in (MIN_PASSWORD_LENGTH, 20, MAX_PASSWORD_LENGTH):
        assert check_password("p" * length) == "p" * length


@pytest.mark.parametrize("length", [0, 1, MIN_PASSWORD_LENGTH - 1, MAX_PASSWORD_LENGTH + 1])
def test_passwords_outside_the_policy_are_rejected(length: int) -> None:
    with pytest.raises(InvalidPassword):
        check_password("p" * length)


def test_password_length_counts_characters_not_bytes() -> None:
    assert check_password("ключ-пароль") == "ключ-пароль"  # 11 characters, 20 bytes
    with pytest.raises(InvalidPassword):
        check_password("ключ")


def test_an_error_never_repeats_the_password() -> None:
    with pytest.raises(InvalidPassword) as caught:
        check_password("secret!")
    assert "secret!" not in str(caught.value)


def test_roles_are_stored_sorted_and_read_back() -> None:
    assert roles_text(("customer", "admin", "customer")) == "admin,customer"
    assert roles_of_text("admin,customer") == ("admin", "customer")


def test_a_user_has_at_least_one_role() -> None:
    with pytest.raises(ValueError):
        roles_text(())


def test_an_unused_valid_refresh_token_is_rotated() -> None:
    assert redeem(token(), NOW) is Redemption.ROTATE


def test_an_unknown_refresh_token_is_refused() -> None:
    assert redeem(None, NOW) is Redemption.REFUSED


def test_an_expired_refresh_token_is_refused() -> None:
    assert redeem(token(expires_at=NOW), NOW) is Redemption.REFUSED
    assert redeem(token(expires_at=NOW - timedelta(seconds=1)), NOW) is Redemption.REFUSED


def test_a_revoked_refresh_token_is_refused() -> None:
    assert redeem(token(revoked_at=NOW - timedelta(minutes=1)), NOW) is Redemption.REFUSED


def test_a_used_refresh_token_coming_back_is_reuse() -> None:
    assert redeem(token(used_at=NOW - timedelta(minutes=1)), NOW) is Redemption.REUSED


def test_reuse_is_judged_before_expiry() -> None:
    used_and_expired = token(used_at=NOW - timedelta(days=2), expires_at=NOW - timedelta(days=1))
    assert redeem(used_and_expired, NOW) is Redemption.REUSED


def test_a_used_token_of_a_revoked_family_is_only_refused() -> None:
    revoked = token(used_at=NOW - timedelta(minutes=2), revoked_at=NOW - timedelta(minutes=1))
    assert redeem(revoked, NOW) is Redemption.REFUSED


def test_a_refresh_token_is_stored_as_its_sha256() -> None:
    digest = refresh_token_digest("opaque-token")
    # sha256(b"opaque-token"), as `printf opaque-token | sha256sum` prints it
    assert digest == "84d3f23da9b5f51b3269566eff05d3fb23607eeef89567f9cd280b90ca0dbc5c"
    assert digest != refresh_token_digest("opaque-token2")
