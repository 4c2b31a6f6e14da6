"""Identity's settings: defaults, and what it refuses to start with."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError
from souq_identity.main import IdentitySettings

ENV_NAMES = [
    "IDENTITY_HTTP_PORT",
    "IDENTITY_ACCESS_TOKEN_TTL_S",
    "IDENTITY_REFRESH_TOKEN_TTL_S",
    "IDENTITY_ADMIN_EMAIL",
    "IDENTITY_ADMIN_PASSWORD",
    "IDENTITY_MAX_CONCURRENT_HASHES",
    "IDENTITY_MAX_WAITING_HASHES",
    "IDENTITY_ARGON2_TIME_COST",
    "IDENTITY_ARGON2_MEMORY_COST_KIB",
    "IDENTITY_ARGON2_PARALLELISM",
    "IDENTITY_ENVIRONMENT",
    "IDENTITY_KEY_ENCRYPTION_KEY",
    "IDENTITY_KEY_ENCRYPTION_KEY_FILE",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = IdentitySettings()
    assert settings.http_port == 8083
    assert settings.access_token_ttl_s == 300
    assert settings.refresh_token_ttl_s == 14 * 24 * 3600
    assert settings.admin_email == "admin@souq.local"
    assert settings.admin_password.get_secret_value() == ""
    assert (settings.max_concurrent_hashes, settings.max_waiting_hashes) == (1, 16)
    assert (settings.argon2_time_cost, settings.argon2_memory_cost_kib) == (2, 19_456)
    assert settings.argon2_parallelism == 1


def test_settings_come_from_identity_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ACCESS_TOKEN_TTL_S", "60")
    monkeypatch.setenv("IDENTITY_ADMIN_EMAIL", "  Boss@Souq.Local ")
    monkeypatch.setenv("IDENTITY_ARGON2_TIME_COST", "3")
    monkeypatch.setenv("IDENTITY_ARGON2_MEMORY_COST_KIB", "12288")
    settings = IdentitySettings()
    assert settings.access_token_ttl_s == 60
    assert settings.admin_email == "boss@souq.local"
    assert (settings.argon2_time_cost, settings.argon2_memory_cost_kib) == (3, 12_288)


@pytest.mark.parametrize(
    ("time_cost", "memory_kib"), [(1, 47_103), (2, 19_455), (3, 12_287), (4, 9_215), (5, 7_167)]
)
def test_argon2_below_owasps_minimum_is_refused(
    monkeypatch: pytest.MonkeyPatch, time_cost: int, memory_kib: int
) -> None:
    monkeypatch.setenv("IDENTITY_ARGON2_TIME_COST", str(time_cost))
    monkeypatch.setenv("IDENTITY_ARGON2_MEMORY_COST_KIB", str(memory_kib))
    with pytest.raises(ValidationError, match="OWASP"):
        IdentitySettings()


def test_an_admin_password_outside_the_policy_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDENTITY_ADMIN_PASSWORD", "Xq7!zz")
    with pytest.raises(ValidationError) as caught:
        IdentitySettings()
    assert "Xq7!zz" not in str(caught.value)
    assert "8 to 128" in str(caught.value)


def test_a_refused_setting_does_not_show_the_admin_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDENTITY_ADMIN_PASSWORD", "correct-horse-battery")
    monkeypatch.setenv("IDENTITY_ARGON2_MEMORY_COST_KIB", "1024")
    with pytest.raises(ValidationError) as caught:
        IdentitySettings()
    assert "correct-horse" not in str(caught.value)


def test_the_admin_password_never_shows_in_the_settings_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDENTITY_ADMIN_PASSWORD", "correct-horse-battery")
    settings = IdentitySettings()
    assert "correct-horse" not in repr(settings) and "correct-horse" not in str(settings)
    assert settings.admin_password.get_secret_value() == "correct-horse-battery"


def test_production_refuses_to_start_without_a_key_encryption_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDENTITY_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="IDENTITY_KEY_ENCRYPTION_KEY"):
        IdentitySettings()
    monkeypatch.setenv("IDENTITY_KEY_ENCRYPTION_KEY", base64.urlsafe_b64encode(b"k" * 32).decode())
    assert IdentitySettings().key_encryption().enabled


def test_a_malformed_key_encryption_key_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDENTITY_KEY_ENCRYPTION_KEY", "too-short-a-secret")
    with pytest.raises(ValidationError, match="32 random bytes") as caught:
        IdentitySettings()
    assert "too-short-a-secret" not in str(caught.value)


def test_locally_without_a_key_encryption_key_keys_are_not_sealed() -> None:
    assert not IdentitySettings().key_encryption().enabled
