"""Initial schema: extensions, the job queue, accounts, apps, knowledge, files and workflows.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from procrastinate.schema import SchemaManager
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR

from tusk.db.extensions import ensure_extensions

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOW = sa.text("now()")
TRUE, FALSE = sa.text("true"), sa.text("false")


def _json(name: str, default: str = "{}", *, nullable: bool = False) -> sa.Column[Any]:
    server_default = None if nullable else sa.text(f"'{default}'::jsonb")
    return sa.Column(name, JSONB(), server_default=server_default, nullable=nullable)


def _stamp(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=NOW, nullable=False)


def _time(name: str) -> sa.Column[Any]:
    """A nullable timestamp; `created_at`/`updated_at` come from `_table`."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def _str(
    name: str, length: int, default: str | None = None, *, null: bool = False
) -> sa.Column[Any]:
    return sa.Column(name, sa.String(length), server_default=default, nullable=null)


def _text(name: str, default: str | None = "", *, null: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.Text(), server_default=default, nullable=null)


def _int(
    name: str, default: str | None = "0", *, null: bool = False, kind: Any = sa.Integer
) -> sa.Column[Any]:
    return sa.Column(name, kind(), server_default=default, nullable=null)


def _bool(name: str, default: sa.TextClause) -> sa.Column[Any]:
    return sa.Column(name, sa.Boolean(), server_default=default, nullable=False)


def _uuid(name: str, *, null: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.UUID(), nullable=null)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    ref_table = target.split(".")[0]
    name = op.f(f"fk_{table}_{column}_{ref_table}")
    return sa.ForeignKeyConstraint([column], [target], name=name, ondelete=ondelete)


def _check(table: str, name: str, condition: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(condition, name=op.f(f"ck_{table}_{name}"))


def _one_of(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _index(table: str, *columns: str, **kw: Any) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns), **kw)


def _table(
    name: str,
    *items: sa.Column[Any] | sa.Constraint,
    workspace: bool = True,
    updated: bool = True,
    accounts: tuple[str, ...] = (),
    app: str | None = None,
) -> None:
    """A table with a UUID id, an optional workspace, timestamps and account references.

    `accounts` names columns that point at accounts (NULL once the account is deleted);
    `app` is "indexed" or "plain" for an `app_id` that cascades with its app.
    """
    columns: list[Any] = [
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False)
    ]
    if workspace:
        columns.append(_uuid("workspace_id", null=False))
        columns.append(_fk(name, "workspace_id", "workspaces.id", "CASCADE"))
    if app:
        columns += [_uuid("app_id", null=False), _fk(name, "app_id", "apps.id", "CASCADE")]
    columns += items
    for column in accounts:
        columns += [_uuid(column), _fk(name, column, "accounts.id", "SET NULL")]
    columns.append(_stamp("created_at"))
    if updated:
        columns.append(_stamp("updated_at"))
    columns.append(sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")))
    op.create_table(name, *columns)
    if workspace:
        _index(name, "workspace_id")
    if app == "indexed":
        _index(name, "app_id")


def _queue() -> None:
    # procrastinate's schema file holds `%` in function bodies: run it without parameters.
    op.get_bind().exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def _accounts() -> None:
    op.create_table(
        "setup",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("version", 32),
        _stamp("setup_at"),
        _check("setup", "single_row", "id = 1"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_setup")),
    )
    _table("workspaces", _str("name", 255), _str("status", 32, "normal"), workspace=False)
    _table(
        "accounts",
        _str("name", 255),
        _str("email", 255),
        _str("password_hash", 255, null=True),
        _str("status", 32, "active"),
        _str("interface_language", 32, "en-US"),
        _str("timezone", 64, "UTC"),
        _time("last_login_at"),
        _str("last_login_ip", 64, null=True),
        sa.UniqueConstraint("email", name=op.f("uq_accounts_email")),
        workspace=False,
    )
    roles = ("owner", "admin", "editor", "normal", "dataset_operator")
    _table(
        "memberships",
        _uuid("account_id", null=False),
        _str("role", 32),
        _bool("current", FALSE),
        _fk("memberships", "account_id", "accounts.id", "CASCADE"),
        _check("memberships", "role", _one_of("role", *roles)),
        sa.UniqueConstraint(
            "workspace_id", "account_id", name=op.f("uq_memberships_workspace_id_account_id")
        ),
        updated=False,
    )
    _index("memberships", "account_id")


def _apps() -> None:
    modes = ("completion", "chat", "agent-chat", "advanced-chat", "workflow")
    _table(
        "apps",
        _str("name", 255),
        _text("description"),
        _str("mode", 32),
        _str("icon_type", 16, null=True),
        _str("icon", 255, null=True),
        _str("icon_background", 32, null=True),
        _uuid("app_model_config_id"),
        _uuid("workflow_id"),
        _str("status", 32, "normal"),
        _bool("enable_site", TRUE),
        _bool("enable_api", TRUE),
        _int("max_active_requests", None, null=True),
        _bool("use_icon_as_answer_icon", FALSE),
        _check("apps", "mode", _one_of("mode", *modes)),
        accounts=("created_by", "updated_by"),
    )
    _table(
        "api_keys",
        _uuid("app_id"),
        _str("type", 16),
        _str("key_hash", 64),
        _str("key_hint", 32),
        _time("last_used_at"),
        _fk("api_keys", "app_id", "apps.id", "CASCADE"),
        _check("api_keys", "type", _one_of("type", "app", "dataset")),
        _check("api_keys", "app_key_has_app", "(type = 'app') = (app_id IS NOT NULL)"),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        accounts=("created_by",),
        updated=False,
    )
    _index("api_keys", "app_id")
    _table(
        "app_model_configs",
        _json("config"),
        app="indexed",
        accounts=("created_by",),
        updated=False,
    )
    _table(
        "end_users",
        _str("type", 32, "service-api"),
        _str("external_user_id", 255, null=True),
        _str("session_id", 255),
        _str("name", 255, null=True),
        _bool("is_anonymous", FALSE),
        sa.UniqueConstraint("app_id", "session_id", name=op.f("uq_end_users_app_id_session_id")),
        app="plain",
    )


def _chat_records() -> None:
    _table(
        "conversations",
        _uuid("app_model_config_id"),
        _str("mode", 32),
        _str("name", 255, ""),
        _json("inputs"),
        _text("introduction"),
        _str("status", 32, "normal"),
        _str("from_source", 32),
        _uuid("from_end_user_id"),
        _int("dialogue_count"),
        _bool("is_deleted", FALSE),
        _fk("conversations", "from_end_user_id", "end_users.id", "SET NULL"),
        app="plain",
        accounts=("from_account_id",),
    )
    _index("conversations", "app_id", "from_end_user_id", "updated_at")
    _table(
        "messages",
        _uuid("conversation_id", null=False),
        _uuid("parent_message_id"),
        _json("inputs"),
        _text("query"),
        _text("answer"),
        _json("message", "[]"),
        _int("message_tokens"),
        _int("answer_tokens"),
        _int("total_tokens", kind=sa.BigInteger),
        sa.Column("total_price", sa.Numeric(12, 7), server_default="0", nullable=False),
        _str("currency", 8, "USD"),
        sa.Column("provider_response_latency", sa.Float(), server_default="0", nullable=False),
        _str("status", 32, "normal"),
        _text("error", None, null=True),
        _json("message_metadata"),
        _str("from_source", 32),
        _uuid("from_end_user_id"),
        _uuid("workflow_run_id"),
        _bool("agent_based", FALSE),
        _fk("messages", "conversation_id", "conversations.id", "CASCADE"),
        _fk("messages", "from_end_user_id", "end_users.id", "SET NULL"),
        app="indexed",
        accounts=("from_account_id",),
    )
    _index("messages", "conversation_id", "created_at")


def _knowledge() -> None:
    _table(
        "datasets",
        _str("name", 255),
        _text("description"),
        _str("provider", 32, "vendor"),
        _str("permission", 32, "only_me"),
        _str("data_source_type", 32, null=True),
        _str("indexing_technique", 32, "high_quality"),
        _str("embedding_model", 255, null=True),
        _str("embedding_model_provider", 255, null=True),
        _int("embedding_dimensions", None, null=True),
        _json("retrieval_model"),
        _str("text_search_config", 64, "simple"),
        _str("doc_form", 32, "text_model"),
        _check("datasets", "technique", _one_of("indexing_technique", "high_quality", "economy")),
        accounts=("created_by", "updated_by"),
    )
    statuses = ("waiting", "parsing", "cleaning", "splitting", "indexing", "completed")
    _table(
        "documents",
        _uuid("dataset_id", null=False),
        _int("position", None),
        _str("name", 255),
        _str("batch", 64),
        _str("data_source_type", 32),
        _json("data_source_info"),
        _json("process_rule"),
        _str("created_from", 32, "api"),
        _str("doc_form", 32, "text_model"),
        _str("doc_language", 32, null=True),
        _json("doc_metadata"),
        _int("word_count"),
        _int("tokens"),
        _str("indexing_status", 32, "waiting"),
        _int("completed_segments"),
        _int("total_segments"),
        _text("error", None, null=True),
        _bool("enabled", TRUE),
        _time("disabled_at"),
        _bool("archived", FALSE),
        *(_time(f"{step}_at") for step in _DOCUMENT_STEPS),
        sa.Column("indexing_latency", sa.Float(), nullable=True),
        _fk("documents", "dataset_id", "datasets.id", "CASCADE"),
        _check(
            "documents",
            "indexing_status",
            _one_of("indexing_status", *statuses, "error", "paused"),
        ),
        accounts=("created_by",),
    )
    _index("documents", "batch")
    _index("documents", "dataset_id", "position")
    _segments()


_DOCUMENT_STEPS = (
    "processing_started",
    "parsing_completed",
    "cleaning_completed",
    "splitting_completed",
    "completed",
    "paused",
    "stopped",
)


def _segments() -> None:
    _table(
        "document_segments",
        _uuid("dataset_id", null=False),
        _uuid("document_id", null=False),
        _uuid("parent_id"),
        _int("position", None),
        _text("content", None),
        _text("answer", None, null=True),
        _int("word_count"),
        _int("tokens"),
        _json("keywords", "[]"),
        _str("index_node_id", 255, null=True),
        _str("index_node_hash", 255, null=True),
        _int("hit_count"),
        _bool("enabled", TRUE),
        _time("disabled_at"),
        _str("status", 32, "waiting"),
        _text("error", None, null=True),
        sa.Column("embedding", Vector(), nullable=True),
        sa.Column("content_tsv", TSVECTOR(), nullable=True),
        _time("indexing_at"),
        _time("completed_at"),
        _fk("document_segments", "dataset_id", "datasets.id", "CASCADE"),
        _fk("document_segments", "document_id", "documents.id", "CASCADE"),
        _fk("document_segments", "parent_id", "document_segments.id", "CASCADE"),
        accounts=("created_by",),
    )
    _index("document_segments", "dataset_id")
    _index("document_segments", "document_id", "position")
    op.create_index(
        "ix_document_segments_content_tsv",
        "document_segments",
        ["content_tsv"],
        postgresql_using="gin",
    )


def _files_and_credentials() -> None:
    _table(
        "upload_files",
        _str("storage_type", 16),
        _str("key", 512),
        _str("name", 255),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _str("extension", 32),
        _str("mime_type", 255, null=True),
        _str("hash", 64, null=True),
        _str("created_by_role", 16),
        _uuid("created_by"),
        _text("source_url"),
        _bool("used", FALSE),
        _uuid("used_by"),
        _time("used_at"),
        updated=False,
    )
    op.create_table(
        "storage_objects",
        _str("key", 512),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _stamp("created_at"),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_storage_objects")),
    )
    op.create_table(
        "storage_chunks",
        _str("key", 512),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        _fk("storage_chunks", "key", "storage_objects.key", "CASCADE"),
        sa.PrimaryKeyConstraint("key", "seq", name=op.f("pk_storage_chunks")),
    )
    _table(
        "provider_credentials",
        _str("provider", 255),
        _str("name", 255, "default"),
        sa.Column("encrypted_config", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint(
            "workspace_id",
            "provider",
            "name",
            name=op.f("uq_provider_credentials_workspace_id_provider_name"),
        ),
    )
    op.create_table(
        "kv_store",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", JSONB(), nullable=False),
        _time("expires_at"),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_kv_store")),
    )
    _index("kv_store", "expires_at")


def _workflows() -> None:
    _table(
        "workflows",
        _str("type", 16),
        _str("version", 64),
        _str("marked_name", 255, ""),
        _text("marked_comment"),
        _json("graph"),
        _json("features"),
        _json("environment_variables", "[]"),
        _json("conversation_variables", "[]"),
        _uuid("created_by"),
        _uuid("updated_by"),
        _check("workflows", "type", _one_of("type", "workflow", "chat")),
        app="plain",
    )
    _index("workflows", "app_id", "version")
    run_statuses = ("running", "succeeded", "failed", "stopped", "partial-succeeded", "paused")
    _table(
        "workflow_runs",
        _uuid("workflow_id", null=False),
        _str("type", 16),
        _str("triggered_from", 32),
        _str("version", 64),
        _json("graph"),
        _json("inputs"),
        _str("status", 32, "running"),
        _json("outputs"),
        _text("error", None, null=True),
        sa.Column("elapsed_time", sa.Float(), server_default="0", nullable=False),
        _int("total_tokens", kind=sa.BigInteger),
        _int("total_steps"),
        _int("exceptions_count"),
        _str("created_by_role", 16),
        _uuid("created_by"),
        _time("finished_at"),
        _fk("workflow_runs", "workflow_id", "workflows.id", "CASCADE"),
        _check("workflow_runs", "status", _one_of("status", *run_statuses)),
        app="plain",
        updated=False,
    )
    _index("workflow_runs", "app_id", "created_at")
    _node_executions()


def _node_executions() -> None:
    statuses = ("running", "succeeded", "failed", "exception", "retry", "stopped", "paused")
    _table(
        "workflow_node_executions",
        _uuid("workflow_id", null=False),
        _uuid("workflow_run_id"),
        _str("triggered_from", 32),
        _int("index", None),
        _str("predecessor_node_id", 255, null=True),
        _str("node_execution_id", 255, null=True),
        _str("node_id", 255),
        _str("node_type", 64),
        _str("title", 255),
        _json("inputs", nullable=True),
        _json("process_data", nullable=True),
        _json("outputs", nullable=True),
        _str("status", 32),
        _text("error", None, null=True),
        sa.Column("elapsed_time", sa.Float(), server_default="0", nullable=False),
        _json("execution_metadata"),
        _str("created_by_role", 16),
        _uuid("created_by"),
        _time("finished_at"),
        _fk("workflow_node_executions", "workflow_id", "workflows.id", "CASCADE"),
        _fk("workflow_node_executions", "workflow_run_id", "workflow_runs.id", "CASCADE"),
        _check("workflow_node_executions", "status", _one_of("status", *statuses)),
        app="indexed",
        updated=False,
    )
    _index("workflow_node_executions", "workflow_run_id", "index")


def upgrade() -> None:
    ensure_extensions(op.get_bind())
    _queue()
    _accounts()
    _apps()
    _chat_records()
    _knowledge()
    _files_and_credentials()
    _workflows()


def downgrade() -> None:
    raise NotImplementedError("the initial schema has no downgrade; restore a backup instead")
