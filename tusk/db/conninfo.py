"""libpq connection strings from the settings: the one place that knows how Tusk connects."""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tusk.config import ConfigError, Settings

_DRIVER_SUFFIX = re.compile(r"^(postgres(?:ql)?)\+\w+://")
CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Target:
    """Where the database is, for connecting and for messages (never carries the password)."""

    conninfo: str
    hosts: str
    ports: str
    dbname: str

    @property
    def where(self) -> str:
        hosts, ports = self.hosts.split(","), self.ports.split(",")
        pairs = [f"{h}:{ports[min(i, len(ports) - 1)]}" for i, h in enumerate(hosts)]
        return f"{','.join(pairs)}/{self.dbname}"


def normalize_url(url: str) -> str:
    """Accept SQLAlchemy-style URLs (postgresql+psycopg://) as libpq does not."""
    return _DRIVER_SUFFIX.sub(r"\1://", url.strip())


def parse_database_url(url: str) -> dict[str, str | int]:
    try:
        parsed = conninfo_to_dict(normalize_url(url))
        params: dict[str, str | int] = {k: v for k, v in parsed.items() if v is not None}
    except Exception:
        params = {}
    ports = str(params.get("port", "5432")).split(",")
    if not params or not all(port.isdigit() for port in ports):
        raise ConfigError(
            "DATABASE_URL",
            "is not a valid PostgreSQL URL",
            "postgresql://user:password@host:port/db",
        )
    return params


def _with_defaults(params: dict[str, str | int], application_name: str) -> str:
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    params.setdefault("application_name", application_name)
    if "," in str(params.get("host", "")):
        # Several hosts form an HA cluster: only the primary takes writes.
        params.setdefault("target_session_attrs", "read-write")
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def external_conninfo(settings: Settings, application_name: str = "tusk") -> str:
    if settings.database_url:
        return _with_defaults(parse_database_url(settings.database_url), application_name)
    hosts = [h.strip() for h in (settings.pg_host or "").split(",") if h.strip()]
    params: dict[str, str | int] = {
        "host": ",".join(hosts),
        "port": ",".join([str(settings.pg_port)] * len(hosts)),
        "user": settings.pg_username,
        "dbname": settings.pg_database,
        "sslmode": settings.pg_sslmode,
    }
    password = settings.pg_password.get_secret_value()
    if password:
        params["password"] = password
    return _with_defaults(params, application_name)


def describe(conninfo: str) -> Target:
    params = conninfo_to_dict(conninfo)
    return Target(
        conninfo=conninfo,
        hosts=str(params.get("host") or params.get("hostaddr") or "localhost"),
        ports=str(params.get("port") or 5432),
        dbname=str(params.get("dbname") or params.get("user") or ""),
    )


def with_application_name(conninfo: str, name: str) -> str:
    params = dict(conninfo_to_dict(conninfo))
    params["application_name"] = name
    return make_conninfo(**{k: str(v) for k, v in params.items()})
