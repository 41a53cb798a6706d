"""Importing and exporting apps as Dify DSL files over HTTP and with the CLI."""

from __future__ import annotations

from pathlib import Path

import yaml
from sqlalchemy import text

from tests.support.api import api_client, bearer, setup_and_login
from tests.support.tusk import db_env, run_tusk
from tusk.db.engine import engine_scope

DSL = Path(__file__).parent.parent / "dsl"


def load(name: str) -> str:
    return (DSL / name).read_text(encoding="utf-8")


async def test_import_export_import_keeps_the_graph(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        first = await client.post(
            "/console/api/apps/imports",
            json={
                "mode": "yaml-content",
                "yaml_content": load("awesome-dify-workflow-text-to-card.yml"),
            },
            headers=bearer(token),
        )
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["status"] in ("completed", "completed-with-warnings")
        assert body["current_dsl_version"] == "0.6.0"
        exported = await client.get(
            f"/console/api/apps/{body['app_id']}/export", headers=bearer(token)
        )
        again = await client.post(
            "/console/api/apps/imports",
            json={"mode": "yaml-content", "yaml_content": exported.json()["data"], "name": "Copy"},
            headers=bearer(token),
        )
        assert again.status_code == 200, again.text
        drafts = [
            (
                await client.get(
                    f"/console/api/apps/{app_id}/workflows/draft", headers=bearer(token)
                )
            ).json()["graph"]
            for app_id in (body["app_id"], again.json()["app_id"])
        ]
        assert drafts[0]["nodes"] == drafts[1]["nodes"]
        assert drafts[0]["edges"] == drafts[1]["edges"]
        source = yaml.safe_load(load("awesome-dify-workflow-text-to-card.yml"))
        assert [n["id"] for n in drafts[0]["nodes"]] == [
            n["id"] for n in source["workflow"]["graph"]["nodes"]
        ]


async def test_unsupported_nodes_are_warned_about_and_secrets_blanked(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        reply = await client.post(
            "/console/api/apps/imports",
            json={"mode": "yaml-content", "yaml_content": load("tusk-workflow-tool-secrets.yml")},
            headers=bearer(token),
        )
        body = reply.json()
        assert body["status"] == "completed", body  # Dify's status speaks of the version only
        assert any("tool" in warning for warning in body["warnings"])
        exported = await client.get(
            f"/console/api/apps/{body['app_id']}/export", headers=bearer(token)
        )
        document = yaml.safe_load(exported.json()["data"])
        secrets = [v for v in document["workflow"]["environment_variables"]
                   if v["value_type"] == "secret"]  # fmt: skip
        assert secrets
        assert all(v["value"] == "" for v in secrets)
        with_secrets = await client.get(
            f"/console/api/apps/{body['app_id']}/export?include_secret=true", headers=bearer(token)
        )
        document = yaml.safe_load(with_secrets.json()["data"])
        values = [v["value"] for v in document["workflow"]["environment_variables"]
                  if v["value_type"] == "secret"]  # fmt: skip
        assert all(values)


async def test_bad_files_fail_with_a_reason_and_leave_nothing(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        for content in ("kind: app\nversion: 0.1.0\napp: [", "kind: plugin\n", "- a\n- b\n"):
            reply = await client.post(
                "/console/api/apps/imports",
                json={"mode": "yaml-content", "yaml_content": content},
                headers=bearer(token),
            )
            assert reply.status_code == 400, reply.text
            assert reply.json()["status"] == "failed"
            assert reply.json()["error"]
        newer_major = "kind: app\nversion: 9.0.0\napp: {name: x, mode: workflow}\n"
        refused = await client.post(
            "/console/api/apps/imports",
            json={"mode": "yaml-content", "yaml_content": newer_major},
            headers=bearer(token),
        )
        assert refused.json()["status"] == "failed"
    async with engine_scope(fresh_database) as engine, engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM apps"))).scalar() == 0


async def test_a_newer_minor_version_waits_for_confirmation(fresh_database: str) -> None:
    source = yaml.safe_load(load("tusk-chat.yml"))
    source["version"] = "0.99.0"
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        pending = await client.post(
            "/console/api/apps/imports",
            json={"mode": "yaml-content", "yaml_content": yaml.safe_dump(source)},
            headers=bearer(token),
        )
        assert pending.status_code == 202, pending.text
        assert pending.json()["app_id"] is None
        confirmed = await client.post(
            f"/console/api/apps/imports/{pending.json()['id']}/confirm", headers=bearer(token)
        )
        assert confirmed.status_code == 200, confirmed.text
        app = await client.get(
            f"/console/api/apps/{confirmed.json()['app_id']}", headers=bearer(token)
        )
        assert app.json()["mode"] == source["app"]["mode"]
        again = await client.post(
            f"/console/api/apps/imports/{pending.json()['id']}/confirm", headers=bearer(token)
        )
        assert again.status_code == 404


async def test_cli_import_and_export(fresh_database: str, tmp_path: Path) -> None:
    async with api_client(fresh_database) as client:
        await setup_and_login(client)
    env = db_env(fresh_database)
    imported = run_tusk("app", "import", str(DSL / "tusk-workflow-tool-secrets.yml"), env=env)
    assert imported.returncode == 0, imported.stderr
    assert "warning:" in imported.stdout
    app_id = imported.stdout.split(" app ", 1)[1].split()[0]
    target = tmp_path / "out.yml"
    exported = run_tusk("app", "export", app_id, "-o", str(target), env=env)
    assert exported.returncode == 0, exported.stderr
    assert yaml.safe_load(target.read_text())["kind"] == "app"
    broken = tmp_path / "broken.yml"
    broken.write_text("kind: app\napp: [\n")
    failed = run_tusk("app", "import", str(broken), env=env)
    assert failed.returncode != 0
    assert "cannot be imported" in failed.stderr + failed.stdout
