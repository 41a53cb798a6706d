"""One settings object, read from the environment and an optional `.env`, validated at start-up.

Names follow the `.env` of a Dify-on-PostgreSQL deployment so that an existing file works.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

# The key shipped in Dify's example `.env`: anyone can read it, so it protects nothing.
DIFY_DEFAULT_SECRET_KEY = "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U"  # noqa: S105
MIN_SECRET_KEY_LENGTH = 32
IGNORED_PREFIXES = ("REDIS_", "CELERY_")


class ConfigError(Exception):
    """A configuration value Tusk cannot start with; `str()` is one line for the operator."""

    def __init__(
        self, variable: str, problem: str, expected: str, shown: str | None = None
    ) -> None:
        self.variable = variable
        subject = variable if shown is None else f"{variable}={shown}"
        super().__init__(f"configuration error: {subject} {problem}; expected {expected}")


class StorageType(StrEnum):
    POSTGRES = "postgres"
    LOCAL = "local"
    S3 = "s3"


def _env(*names: str, expected: str, secret: bool = False) -> Any:
    """Field metadata: the variable names (first one canonical) and the expected form."""
    return {
        "validation_alias": AliasChoices(*names),
        "description": expected,
        "json_schema_extra": {"secret": secret},
    }


Port = Annotated[int, Field(ge=1, le=65535)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    database_url: str | None = Field(
        None, **_env("DATABASE_URL", expected="a URL postgresql://user:password@host:port/db")
    )
    pg_host: str | None = Field(
        None, **_env("PG_HOST", "DB_HOST", expected="a host name, or several separated by commas")
    )
    pg_port: Port = Field(5432, **_env("PG_PORT", "DB_PORT", expected="a TCP port (1-65535)"))
    pg_username: str = Field(
        "postgres", **_env("PG_USERNAME", "DB_USERNAME", expected="a role name")
    )
    pg_password: SecretStr = Field(
        SecretStr(""), **_env("PG_PASSWORD", "DB_PASSWORD", expected="a password", secret=True)
    )
    pg_database: str = Field(
        "tusk", **_env("PG_DATABASE", "DB_DATABASE", expected="a database name")
    )
    pg_sslmode: SslMode = Field(
        "prefer",
        **_env(
            "PG_SSLMODE", expected="one of disable, allow, prefer, require, verify-ca, verify-full"
        ),
    )
    secret_key: SecretStr | None = Field(
        None,
        **_env(
            "SECRET_KEY",
            expected=f"a random string of at least {MIN_SECRET_KEY_LENGTH} characters "
            "(generate one with: openssl rand -base64 42)",
            secret=True,
        ),
    )
    log_level: LogLevel = Field(
        "INFO", **_env("LOG_LEVEL", expected="one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    )
    host: str = Field("127.0.0.1", **_env("TUSK_HOST", expected="an address to listen on"))
    port: Port = Field(8001, **_env("TUSK_PORT", "DIFY_PORT", expected="a TCP port (1-65535)"))
    data_dir: Path = Field(Path("./data"), **_env("TUSK_DATA_DIR", expected="a directory path"))
    db_wait_seconds: float = Field(
        60.0,
        ge=0,
        **_env("TUSK_DB_WAIT_SECONDS", expected="seconds to wait for the database at start-up"),
    )
    # Dify's defaults are 30 and 10; but an extra connection is closed as soon as it is given
    # back, so that under steady load above 30 the pool opened and closed a connection at every
    # few requests (277 in 3,000 workflow runs at 60 clients, a third of the throughput).
    pool_size: int = Field(
        40, ge=1, **_env("SQLALCHEMY_POOL_SIZE", expected="a positive number of connections")
    )
    pool_max_overflow: int = Field(
        0, ge=0, **_env("SQLALCHEMY_MAX_OVERFLOW", expected="a number of extra connections")
    )
    storage_type: StorageType = Field(
        StorageType.POSTGRES, **_env("STORAGE_TYPE", expected="one of postgres, local, s3")
    )
    storage_local_path: Path | None = Field(
        None, **_env("STORAGE_LOCAL_PATH", expected="a directory for STORAGE_TYPE=local")
    )
    s3_endpoint: str | None = Field(
        None, **_env("S3_ENDPOINT", expected="an S3 endpoint URL, e.g. http://minio:9000")
    )
    s3_bucket_name: str | None = Field(None, **_env("S3_BUCKET_NAME", expected="a bucket name"))
    s3_access_key: str | None = Field(None, **_env("S3_ACCESS_KEY", expected="an access key id"))
    s3_secret_key: SecretStr | None = Field(
        None, **_env("S3_SECRET_KEY", expected="a secret access key", secret=True)
    )
    s3_region: str = Field("us-east-1", **_env("S3_REGION", expected="a region name"))
    upload_file_size_limit_mb: int = Field(
        15, ge=1, **_env("UPLOAD_FILE_SIZE_LIMIT", expected="a size in megabytes")
    )
    max_request_body_mb: int = Field(
        100, ge=1, **_env("TUSK_MAX_REQUEST_BODY_MB", expected="a size in megabytes")
    )
    console_cors_allow_origins: str = Field(
        "*", **_env("CONSOLE_CORS_ALLOW_ORIGINS", expected="origins separated by commas, or *")
    )
    web_api_cors_allow_origins: str = Field(
        "*", **_env("WEB_API_CORS_ALLOW_ORIGINS", expected="origins separated by commas, or *")
    )
    access_token_expire_minutes: int = Field(
        60, ge=1, **_env("ACCESS_TOKEN_EXPIRE_MINUTES", expected="a number of minutes")
    )
    refresh_token_expire_days: int = Field(
        30, ge=1, **_env("REFRESH_TOKEN_EXPIRE_DAYS", expected="a number of days")
    )
    worker_concurrency: int = Field(
        4, ge=1, **_env("TUSK_WORKER_CONCURRENCY", expected="a number of jobs run at once")
    )
    worker_heartbeat_seconds: float = Field(
        10.0, gt=0, **_env("TUSK_WORKER_HEARTBEAT_SECONDS", expected="a number of seconds")
    )
    worker_stalled_seconds: float = Field(
        60.0,
        gt=0,
        **_env(
            "TUSK_WORKER_STALLED_SECONDS",
            expected="seconds without a heartbeat after which a worker's jobs are retried",
        ),
    )
    openai_api_key: SecretStr | None = Field(
        None, **_env("OPENAI_API_KEY", expected="an OpenAI API key", secret=True)
    )
    openai_api_base: str | None = Field(
        None,
        **_env(
            "OPENAI_API_BASE", expected="an OpenAI-compatible base URL, e.g. http://vllm:8000/v1"
        ),
    )
    anthropic_api_key: SecretStr | None = Field(
        None, **_env("ANTHROPIC_API_KEY", expected="an Anthropic API key", secret=True)
    )
    anthropic_api_base: str | None = Field(
        None, **_env("ANTHROPIC_API_BASE", expected="an Anthropic API base URL")
    )
    default_chat_model: str | None = Field(
        None, **_env("TUSK_DEFAULT_CHAT_MODEL", expected="provider:model, e.g. openai:gpt-4o-mini")
    )
    default_embedding_model: str = Field(
        "local:all-MiniLM-L6-v2",
        **_env(
            "TUSK_DEFAULT_EMBEDDING_MODEL", expected="provider:model, e.g. local:all-MiniLM-L6-v2"
        ),
    )
    default_rerank_model: str | None = Field(
        None, **_env("TUSK_DEFAULT_RERANK_MODEL", expected="provider:model")
    )
    chat_fallback_models: str = Field(
        "", **_env("TUSK_CHAT_FALLBACK_MODELS", expected="provider:model names separated by commas")
    )
    model_prices_file: Path | None = Field(
        None, **_env("TUSK_MODEL_PRICES", expected="a JSON file of model prices")
    )
    model_connect_timeout: float = Field(
        10.0, gt=0, **_env("TUSK_MODEL_CONNECT_TIMEOUT", expected="seconds")
    )
    model_read_timeout: float = Field(
        60.0, gt=0, **_env("TUSK_MODEL_READ_TIMEOUT", expected="seconds")
    )
    model_max_retries: int = Field(
        2, ge=0, le=10, **_env("TUSK_MODEL_MAX_RETRIES", expected="a number of retries (0-10)")
    )
    code_execution_unsafe: bool = Field(
        False,
        **_env(
            "CODE_EXECUTION_UNSAFE",
            expected="true to run user code WITHOUT a sandbox when bubblewrap is missing",
        ),
    )
    sandbox_timeout: float = Field(
        10.0, gt=0, le=600, **_env("TUSK_SANDBOX_TIMEOUT", expected="seconds per run (0-600)")
    )
    sandbox_memory_mb: int = Field(
        256, ge=32, le=16384, **_env("TUSK_SANDBOX_MEMORY_MB", expected="megabytes per run")
    )
    sandbox_pool_size: int = Field(
        2, ge=0, le=64, **_env("TUSK_SANDBOX_POOL_SIZE", expected="started sandboxes per language")
    )
    sandbox_python: Path = Field(
        Path("/usr/bin/python3"),
        **_env("TUSK_SANDBOX_PYTHON", expected="the Python interpreter that runs user code"),
    )
    sandbox_node: Path | None = Field(
        None,
        **_env(
            "TUSK_SANDBOX_NODE", expected="the Node.js that runs user code (default: node on PATH)"
        ),
    )
    sandbox_packages_dir: Path | None = Field(
        None,
        **_env(
            "TUSK_SANDBOX_PACKAGES_DIR",
            expected="a directory of extra Python packages (pip install --target)",
        ),
    )
    sandbox_python_packages: str = Field(
        "",
        **_env(
            "TUSK_SANDBOX_PYTHON_PACKAGES",
            expected="module names user code may import beyond the standard library, by commas",
        ),
    )
    workflow_max_execution_steps: int = Field(
        500, ge=1, **_env("WORKFLOW_MAX_EXECUTION_STEPS", expected="node runs per workflow run")
    )
    workflow_max_execution_time: float = Field(
        1200.0, gt=0, **_env("WORKFLOW_MAX_EXECUTION_TIME", expected="seconds per workflow run")
    )
    workflow_call_max_depth: int = Field(
        5, ge=1, **_env("WORKFLOW_CALL_MAX_DEPTH", expected="workflows calling workflows, deep")
    )
    workflow_max_parallelism: int = Field(
        10, ge=1, le=256, **_env("WORKFLOW_MAX_PARALLELISM", expected="nodes running at once")
    )
    max_iterations_num: int = Field(
        99, ge=1, **_env("MAX_ITERATIONS_NUM", expected="items an iteration node may take")
    )
    loop_node_max_count: int = Field(
        100, ge=1, **_env("LOOP_NODE_MAX_COUNT", expected="rounds a loop node may run")
    )
    max_variable_size: int = Field(
        204800, ge=1024, **_env("MAX_VARIABLE_SIZE", expected="bytes per workflow value")
    )
    app_max_active_requests: int = Field(
        0,
        ge=0,
        **_env(
            "APP_MAX_ACTIVE_REQUESTS",
            expected="generations running at once per app across all API processes (0: no limit)",
        ),
    )
    mcp_stdio_enabled: bool = Field(
        False,
        **_env(
            "TUSK_MCP_STDIO_ENABLED",
            expected="true to let owners and admins add MCP servers run as local commands",
        ),
    )
    ssrf_allowed_hosts: str = Field(
        "",
        **_env(
            "TUSK_SSRF_ALLOWED_HOSTS",
            expected="hosts or CIDR ranges that HTTP nodes and tools may reach although private "
            "(comma separated)",
        ),
    )

    @property
    def database_configured(self) -> bool:
        """False means Tusk runs its own embedded PostgreSQL in the data dir."""
        return bool(self.database_url or self.pg_host)

    @cached_property
    def embedded_pg_dir(self) -> Path:
        return self.data_dir.resolve() / "pg"

    @property
    def upload_limit_bytes(self) -> int:
        return self.upload_file_size_limit_mb * 1024 * 1024

    @property
    def max_request_body_bytes(self) -> int:
        return self.max_request_body_mb * 1024 * 1024


def env_name(field: str) -> str:
    """The canonical environment variable of a settings field."""
    alias = Settings.model_fields[field].validation_alias
    assert isinstance(alias, AliasChoices)
    first = alias.choices[0]
    assert isinstance(first, str)
    return first


def _shown(field: str, value: object) -> str:
    extra = Settings.model_fields[field].json_schema_extra
    secret = isinstance(extra, dict) and extra.get("secret")
    return "(hidden)" if secret else repr(value)


def _field_of(loc: tuple[int | str, ...]) -> str | None:
    for part in loc:
        if isinstance(part, str) and part in Settings.model_fields:
            return part
        for name, info in Settings.model_fields.items():
            alias = info.validation_alias
            if isinstance(alias, AliasChoices) and part in alias.choices:
                return name
    return None


def _config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    field = _field_of(error["loc"])
    if field is None:
        return ConfigError(str(error["loc"]), error["msg"], "a valid value")
    description = Settings.model_fields[field].description or "a valid value"
    problem = f"is invalid ({error['msg']})"
    return ConfigError(env_name(field), problem, description, _shown(field, error.get("input")))


def check_secret_key(key: str, variable: str = "SECRET_KEY") -> None:
    """Refuse a key anyone could guess: Dify's published default, or a short one."""
    expected = Settings.model_fields["secret_key"].description or ""
    if key == DIFY_DEFAULT_SECRET_KEY:
        raise ConfigError(variable, "is the public default from Dify's example .env", expected)
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(variable, f"is only {len(key)} characters long", expected)


def _check_secret_key(settings: Settings) -> None:
    key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    if key:
        check_secret_key(key)
    elif settings.database_configured:
        expected = Settings.model_fields["secret_key"].description or ""
        problem = "is not set (required with an external database)"
        raise ConfigError("SECRET_KEY", problem, expected)


def _check_storage(settings: Settings) -> None:
    if settings.storage_type is not StorageType.S3:
        return
    for field in ("s3_bucket_name", "s3_access_key", "s3_secret_key"):
        if not getattr(settings, field):
            expected = Settings.model_fields[field].description or "a value"
            raise ConfigError(
                env_name(field), "is not set (required with STORAGE_TYPE=s3)", expected
            )


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; every problem becomes a one-line `ConfigError`."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from None
    _check_secret_key(settings)
    _check_storage(settings)
    if settings.database_url:
        from tusk.db.conninfo import parse_database_url  # imports this module

        parse_database_url(settings.database_url)
    return settings


def ignored_variables(env_file: Path = Path(".env")) -> list[str]:
    """Redis and Celery variables from a Dify `.env`: accepted, and ignored."""
    names = set(os.environ)
    if env_file.is_file():
        names.update(dotenv_values(env_file))
    return sorted(n for n in names if n.startswith(IGNORED_PREFIXES))
