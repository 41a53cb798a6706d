"""Announce changes to an app, its API keys and its annotation reply setting on the pub/sub
channel, so that every API process drops its cached copies (tusk.apps.cache) when the change
commits, whichever code or person made it.

The payload is the one tusk.db.pubsub sends: {"topic": "app-changed", "data": {"app_id": ...}}.
NOTIFY is sent at commit and folds duplicates within a transaction.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# (table, column holding the app id, events)
WATCHED = (
    ("apps", "id", "UPDATE OR DELETE"),
    # last_used_at is rewritten as keys are used: only changes that matter are announced
    ("api_keys", "app_id", "UPDATE OF app_id, workspace_id, key_hash, type OR DELETE"),
    ("app_annotation_settings", "app_id", "INSERT OR UPDATE OR DELETE"),
)


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION tusk_announce_app_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            changed_app text := CASE TG_OP WHEN 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW)
                                END ->> TG_ARGV[0];
        BEGIN
            IF changed_app IS NOT NULL THEN
                PERFORM pg_notify('tusk_events', json_build_object(
                    'topic', 'app-changed', 'data', json_build_object('app_id', changed_app)
                )::text);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    for table, column, events in WATCHED:
        op.execute(
            f"CREATE TRIGGER announce_app_change AFTER {events} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION tusk_announce_app_change('{column}')"
        )


def downgrade() -> None:
    for table, _, _ in WATCHED:
        op.execute(f"DROP TRIGGER announce_app_change ON {table}")
    op.execute("DROP FUNCTION tusk_announce_app_change()")
