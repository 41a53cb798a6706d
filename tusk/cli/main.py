"""The `tusk` command. Each command parses its options, calls the library, and prints; errors
an operator can fix end the command with one line on stderr, never a traceback."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from tusk import __version__
from tusk.config import (
    ConfigError,
    Settings,
    check_secret_key,
    ignored_variables,
    load_settings,
)
from tusk.db import migrate
from tusk.db.embedded import EmbeddedError
from tusk.db.engine import DatabaseUnreachable, wait_for_database
from tusk.db.extensions import ExtensionsMissing
from tusk.errors import InvalidParam, TuskError
from tusk.logs import setup_logging
from tusk.models.credentials import RotationFailed
from tusk.runtime import Runtime, open_runtime

log = logging.getLogger("tusk")
cli = typer.Typer(
    help="Tusk: an LLM application platform on one PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
OPERATOR_ERRORS = (
    ConfigError,
    EmbeddedError,
    DatabaseUnreachable,
    ExtensionsMissing,
    migrate.SchemaNotCurrent,
    TuskError,
    RotationFailed,
)
SUPERVISED = "TUSK_SUPERVISED"  # set by `tusk up` in its children


def fail(message: str) -> NoReturn:
    typer.echo(f"tusk: {message}", err=True)
    raise typer.Exit(1)


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(str(exc))
    setup_logging(settings.log_level)
    ignored = ignored_variables()
    if ignored and not os.environ.get(SUPERVISED):
        log.warning("Tusk does not use Redis or Celery; ignoring %s", ", ".join(ignored))
    return settings


@contextmanager
def operator_errors() -> Iterator[None]:
    try:
        yield
    except OPERATOR_ERRORS as exc:
        fail(str(exc.message if isinstance(exc, TuskError) else exc))


async def ready_database(runtime: Runtime, *, upgrade: bool) -> None:
    """Wait for the database, then migrate it or insist that its schema is current."""
    await wait_for_database(runtime.conninfo, runtime.settings.db_wait_seconds)
    if upgrade:
        status = await asyncio.to_thread(migrate.upgrade, runtime.conninfo)
        log.info("database schema at revision %s", status.current)
    else:
        await asyncio.to_thread(migrate.require_current, runtime.conninfo)


def run(role: str, body: Callable[[Runtime], Any], *, exclusive: bool = False) -> None:
    """Load settings, open the database (starting the embedded one if needed), run `body`."""
    settings = settings_or_exit()
    with operator_errors(), open_runtime(settings, role=role, exclusive=exclusive) as runtime:
        result = body(runtime)
        if asyncio.iscoroutine(result):
            run_loop(result)


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run `main` on uvloop where it is installed (uvicorn's standard extra brings it, except
    on Windows and PyPy): its event loop takes a fraction of asyncio's own CPU per callback and
    per I/O wait, and under load every request waits for the callbacks ahead of it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@cli.command()
def version() -> None:
    """Print Tusk's version."""
    typer.echo(__version__)


@cli.command("migrate")
def migrate_command() -> None:
    """Create or upgrade the database schema (safe to run again)."""

    async def body(runtime: Runtime) -> None:
        await ready_database(runtime, upgrade=True)
        typer.echo(f"database schema is current (revision {migrate.head_revision()})")

    run("migrate", body)


@cli.command()
def api(
    migrate_first: Annotated[
        bool, typer.Option("--migrate", help="Upgrade the schema first instead of refusing.")
    ] = False,
    host: Annotated[str | None, typer.Option(help="Address to listen on (TUSK_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (TUSK_PORT).")] = None,
) -> None:
    """Serve the HTTP API."""
    from tusk.cli.serve import serve_api

    async def body(runtime: Runtime) -> None:
        await ready_database(runtime, upgrade=migrate_first)
        await serve_api(runtime, host=host, port=port)

    run("api", body)


@cli.command()
def worker(
    tasks: Annotated[
        list[str] | None,
        typer.Option("--tasks", help="Extra job blueprint to load, as module:attribute."),
    ] = None,
) -> None:
    """Run background jobs from the queue."""
    from tusk.queue.worker import run_worker
    from tusk.services import open_services, worker_context

    async def body(runtime: Runtime) -> None:
        await ready_database(runtime, upgrade=False)
        async with open_services(runtime) as services:
            context = worker_context(services)
            await run_worker(runtime.conninfo, runtime.settings, tasks or [], context)

    run("worker", body)


@cli.command()
def up() -> None:
    """Run the API and a worker together; with no database configured, on an embedded one."""
    from tusk.cli.supervisor import supervise

    def body(runtime: Runtime) -> None:
        asyncio.run(ready_database(runtime, upgrade=True))
        env = {
            **os.environ,
            "DATABASE_URL": runtime.conninfo,
            "SECRET_KEY": runtime.secret_key,
            SUPERVISED: "1",
        }
        settings = runtime.settings
        log.info("Tusk %s on http://%s:%d", __version__, settings.host, settings.port)
        code = supervise({"api": ["api"], "worker": ["worker"]}, env)
        if code:
            raise typer.Exit(code)

    run("up", body, exclusive=True)


@cli.command()
def setup(
    email: Annotated[str, typer.Option(prompt=True, help="The admin's email.")],
    name: Annotated[str, typer.Option(prompt=True, help="The admin's display name.")],
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Password."),
    ],
) -> None:
    """Create the first admin account and its workspace."""
    from tusk.cli.commands import create_first_admin

    async def body(runtime: Runtime) -> None:
        await ready_database(runtime, upgrade=False)
        workspace = await create_first_admin(runtime, email=email, name=name, password=password)
        typer.echo(f"created the admin {email} and the workspace {workspace!r}")

    run("setup", body)


@cli.command("rotate-secret")
def rotate_secret(
    old: Annotated[str, typer.Option(prompt=True, hide_input=True, help="The key in use.")],
    new: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="The new key."),
    ],
) -> None:
    """Re-encrypt every stored credential under a new SECRET_KEY, in one transaction."""
    from tusk.cli.commands import rotate_secret as rotate

    async def body(runtime: Runtime) -> None:
        check_secret_key(new, "--new")
        await ready_database(runtime, upgrade=False)
        count = await rotate(runtime, old, new)
        typer.echo(
            f"re-encrypted {count} credential(s); start Tusk with SECRET_KEY set to the new key"
        )

    run("rotate-secret", body)


@cli.command()
def doctor() -> None:
    """Check the database, its extensions and privileges, the schema, the worker and storage."""
    from tusk.cli.commands import diagnose

    async def body(runtime: Runtime) -> None:
        findings = await diagnose(runtime)
        for finding in findings:
            mark = "ok  " if finding.ok else "FAIL"
            typer.echo(f"{mark} {finding.name}: {finding.detail}")
            if finding.fix:
                typer.echo(f"     fix: {finding.fix}")
        if not all(finding.ok for finding in findings):
            raise typer.Exit(1)

    run("doctor", body)


knowledge = typer.Typer(help="Move knowledge bases between Tusk instances.", no_args_is_help=True)
cli.add_typer(knowledge, name="kb")


@knowledge.command("export")
def kb_export(
    dataset_id: Annotated[uuid.UUID, typer.Argument(help="The knowledge base (dataset) id.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="A file (default: standard output).")
    ] = None,
) -> None:
    """Write a knowledge base with its files, chunks and vectors (JSON Lines)."""
    from tusk.cli.commands import export_knowledge_base

    async def body(runtime: Runtime) -> None:
        await ready_database(runtime, upgrade=False)
        if output is None:
            await export_knowledge_base(runtime, dataset_id, sys.stdout)
            return
        with output.open("w", encoding="utf-8") as out:
            await export_knowledge_base(runtime, dataset_id, out)

    run("kb-export", body)


@knowledge.command("import")
def kb_import(
    file: Annotated[Path, typer.Argument(help="A file written by `tusk kb export`.")],
    workspace: Annotated[
        uuid.UUID | None, typer.Option(help="The workspace to import into (default: the only one).")
    ] = None,
) -> None:
    """Import a knowledge base in one transaction, without re-embedding it."""
    from tusk.cli.commands import import_knowledge_base

    async def body(runtime: Runtime) -> None:
        await ready_database(runtime, upgrade=False)
        with file.open(encoding="utf-8") as lines:
            dataset, counts = await import_knowledge_base(runtime, lines, workspace)
        typer.echo(
            f"imported {dataset.name!r} as {dataset.id}: {counts['documents']} document(s), "
            f"{counts['segments']} chunk(s)"
        )

    run("kb-import", body)


apps = typer.Typer(help="Move apps in and out as Dify DSL files.", no_args_is_help=True)
cli.add_typer(apps, name="app")


@apps.command("import")
def app_import(
    file: Annotated[Path, typer.Argument(help="A Dify DSL file (YAML).")],
    workspace: Annotated[
        uuid.UUID | None, typer.Option(help="The workspace to import into (default: the only one).")
    ] = None,
) -> None:
    """Create an app from a DSL file; say what in it Tusk cannot run."""
    from tusk.cli.commands import import_app_file

    async def body(runtime: Runtime) -> None:
        await ready_database(runtime, upgrade=False)
        result = await import_app_file(runtime, file.read_text(encoding="utf-8"), workspace)
        if result.status == "failed":
            raise InvalidParam(f"{file} cannot be imported: {result.error}")
        typer.echo(f"imported {file.name} as {result.app_mode} app {result.app_id}")
        for warning in result.warnings:
            typer.echo(f"warning: {warning}")

    run("app-import", body)


@apps.command("export")
def app_export(
    app_id: Annotated[uuid.UUID, typer.Argument(help="The app id.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="A file (default: standard output).")
    ] = None,
    include_secret: Annotated[
        bool, typer.Option(help="Write secret environment variables in clear.")
    ] = False,
) -> None:
    """Write an app (its draft workflow or model config) as a Dify DSL file."""
    from tusk.cli.commands import export_app_file

    async def body(runtime: Runtime) -> None:
        await ready_database(runtime, upgrade=False)
        text = await export_app_file(runtime, app_id, include_secret=include_secret)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")

    run("app-export", body)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
