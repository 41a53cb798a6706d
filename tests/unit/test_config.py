"""Settings: Dify's variable names, validation with one-line errors, and connection strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from tusk.config import ConfigError, StorageType, ignored_variables, load_settings
from tusk.db.conninfo import describe, external_conninfo

GOOD_KEY = "k" * 40


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings read the environment and `.env`: start each test from neither."""
    import os

    for name in list(os.environ):
        if name.startswith(
            ("PG_", "DB_", "TUSK_", "DIFY_", "S3_", "REDIS_", "CELERY_")
        ) or name in (
            "DATABASE_URL",
            "SECRET_KEY",
            "STORAGE_TYPE",
            "LOG_LEVEL",
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_defaults_run_embedded_on_port_8001(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch)
    assert s.port == 8001
    assert s.storage_type is StorageType.POSTGRES
    assert not s.database_configured
    assert s.secret_key is None


def test_dify_port_is_an_alias_of_tusk_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch, DIFY_PORT="9000").port == 9000


def test_a_bad_value_names_the_variable_and_the_expected_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(monkeypatch, TUSK_PORT="eighty")
    message = str(caught.value)
    assert "TUSK_PORT" in message
    assert "'eighty'" in message
    assert "expected a TCP port" in message
    assert "\n" not in message


def test_out_of_range_and_unknown_choices_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        ("PG_PORT", "70000", "PG_PORT='70000' is invalid"),
        ("STORAGE_TYPE", "azure", "expected one of postgres, local, s3"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD'"),
    ]
    for name, value, expected in cases:
        with monkeypatch.context() as scoped, pytest.raises(ConfigError) as caught:
            settings(scoped, **{name: value})
        assert expected in str(caught.value)


def test_secrets_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(monkeypatch, PG_HOST="db", SECRET_KEY="tooshort-secret")
    assert "tooshort-secret" not in str(caught.value)
    assert "SECRET_KEY" in str(caught.value)


def test_an_external_database_needs_a_real_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        settings(monkeypatch, PG_HOST="db.internal")
    with pytest.raises(ConfigError, match="public default"):
        settings(monkeypatch, SECRET_KEY="sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U")
    assert settings(monkeypatch, SECRET_KEY=GOOD_KEY).database_configured


def test_s3_storage_requires_its_bucket_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="S3_BUCKET_NAME"):
        settings(monkeypatch, STORAGE_TYPE="s3")


def test_dify_db_names_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DB_HOST=pg.example\nDB_PORT=6543\nSECRET_KEY={GOOD_KEY}\n")
    s = settings(monkeypatch)
    assert (s.pg_host, s.pg_port) == ("pg.example", 6543)


def test_redis_and_celery_variables_are_listed_as_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_HOST", "redis")
    (tmp_path / ".env").write_text("CELERY_BROKER_URL=redis://redis:6379/1\n")
    assert ignored_variables(tmp_path / ".env") == ["CELERY_BROKER_URL", "REDIS_HOST"]
    settings(monkeypatch)  # and they do not stop start-up


def test_several_hosts_connect_to_the_primary(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        PG_HOST="pg1, pg2,pg3",
        PG_PORT="5433",
        PG_PASSWORD="pw",
        SECRET_KEY=GOOD_KEY,
    )
    params = conninfo_to_dict(external_conninfo(s))
    assert params["host"] == "pg1,pg2,pg3"
    assert params["port"] == "5433,5433,5433"
    assert params["target_session_attrs"] == "read-write"
    assert params["password"] == "pw"
    assert describe(external_conninfo(s)).where == "pg1:5433,pg2:5433,pg3:5433/tusk"


def test_database_url_accepts_sqlalchemy_style_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        DATABASE_URL="postgresql+psycopg://u:p@h1:5432,h2:5432/app?sslmode=require",
        SECRET_KEY=GOOD_KEY,
    )
    params = conninfo_to_dict(external_conninfo(s))
    assert params["dbname"] == "app"
    assert params["sslmode"] == "require"
    assert params["target_session_attrs"] == "read-write"
    one_host = settings(monkeypatch, DATABASE_URL="postgres://u@h/app")  # replaces the URL
    assert "target_session_attrs" not in conninfo_to_dict(external_conninfo(one_host))


def test_a_malformed_database_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("postgresql://u@h:notaport/db", "mysql is not a url"):
        with monkeypatch.context() as scoped, pytest.raises(ConfigError, match="DATABASE_URL"):
            settings(scoped, DATABASE_URL=url, SECRET_KEY=GOOD_KEY)
