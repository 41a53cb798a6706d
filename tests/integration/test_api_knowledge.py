"""Dify's Knowledge API over HTTP, with `dataset-` keys and with console logins."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.api import add_member, api_client, assert_error, bearer, login, setup_and_login
from tests.support.knowledge import run_queued_jobs, services_on

BEES = "Honey bees live in colonies. Worker bees communicate with a waggle dance."
VOLCANO = "A volcano erupts when magma rises. Lava and ash are hazards near a volcano."


async def dataset_key(client: httpx.AsyncClient) -> dict[str, str]:
    token = await setup_and_login(client)
    key = (await client.post("/console/api/datasets/api-keys", headers=bearer(token))).json()
    return bearer(key["token"])


async def create_dataset(
    client: httpx.AsyncClient, auth: dict[str, str], name: str = "Docs", prefix: str = "/v1"
) -> dict[str, Any]:
    response = await client.post(f"{prefix}/datasets", json={"name": name}, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def index(database: str) -> None:
    async with services_on(database) as services:
        await run_queued_jobs(services)


async def test_datasets_are_created_listed_changed_and_deleted(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        auth = await dataset_key(client)
        created = await create_dataset(client, auth)
        assert created["indexing_technique"] == "high_quality"
        assert (created["embedding_model_provider"], created["embedding_model"]) == (
            "local",
            "all-MiniLM-L6-v2",
        )
        assert created["retrieval_model_dict"]["search_method"] == "semantic_search"
        assert created["retrieval_model_dict"]["top_k"] == 4
        duplicate = await client.post("/v1/datasets", json={"name": "Docs"}, headers=auth)
        assert_error(duplicate, 409, "dataset_name_duplicate")
        too_long = await client.post("/v1/datasets", json={"name": "x" * 41}, headers=auth)
        assert assert_error(too_long, 400, "invalid_param")["params"] == "name"
        bad_model = await client.post(
            "/v1/datasets", json={"name": "m", "embedding_model": "nope:x"}, headers=auth
        )
        assert_error(bad_model, 400, "invalid_param")

        listed = (await client.get("/v1/datasets?page=1&limit=10", headers=auth)).json()
        assert (listed["total"], listed["data"][0]["id"]) == (1, created["id"])
        patched = await client.patch(
            f"/v1/datasets/{created['id']}",
            json={
                "name": "Renamed",
                "retrieval_model": {"search_method": "hybrid_search", "top_k": 6},
            },
            headers=auth,
        )
        assert patched.json()["name"] == "Renamed"
        assert patched.json()["retrieval_model_dict"]["search_method"] == "hybrid_search"
        assert (
            await client.delete(f"/v1/datasets/{created['id']}", headers=auth)
        ).status_code == 204
        assert_error(
            await client.get(f"/v1/datasets/{created['id']}", headers=auth), 404, "not_found"
        )


async def test_documents_from_text_are_indexed_and_retrieved(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        auth = await dataset_key(client)
        dataset = await create_dataset(client, auth)
        base = f"/v1/datasets/{dataset['id']}"
        # The body the classic dify-client sends.
        made = await client.post(
            f"{base}/document/create_by_text",
            json={
                "indexing_technique": "high_quality",
                "process_rule": {"mode": "automatic"},
                "name": "bees",
                "text": BEES,
            },
            headers=auth,
        )
        assert made.status_code == 200, made.text
        document, batch = made.json()["document"], made.json()["batch"]
        assert (document["indexing_status"], document["display_status"]) == ("waiting", "queuing")
        status = (
            await client.get(f"{base}/documents/{batch}/indexing-status", headers=auth)
        ).json()
        assert status["data"][0]["indexing_status"] == "waiting"

        await client.post(
            f"{base}/document/create-by-text",
            json={"name": "volcano", "text": VOLCANO},
            headers=auth,
        )
        await index(fresh_database)

        status = (
            await client.get(f"{base}/documents/{batch}/indexing-status", headers=auth)
        ).json()["data"][0]
        assert (
            status["indexing_status"],
            status["completed_segments"],
            status["total_segments"],
        ) == ("completed", 1, 1)
        assert status["completed_at"] >= status["processing_started_at"]
        found = await client.post(
            f"{base}/retrieve", json={"query": "insects and dancing"}, headers=auth
        )
        records = found.json()["records"]
        assert found.json()["query"] == {"content": "insects and dancing"}
        assert records[0]["segment"]["document"]["name"] == "bees"
        assert records[0]["segment"]["content"] == BEES
        assert 0 < records[0]["score"] <= 1
        alias = await client.post(
            f"{base}/hit-testing",
            json={
                "query": "lava",
                "retrieval_model": {"search_method": "full_text_search", "top_k": 1},
            },
            headers=auth,
        )
        assert [r["segment"]["document"]["name"] for r in alias.json()["records"]] == ["volcano"]


async def test_documents_from_files_and_their_lifecycle(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        auth = await dataset_key(client)
        dataset = await create_dataset(client, auth)
        base = f"/v1/datasets/{dataset['id']}"
        data = json.dumps(
            {
                "process_rule": {
                    "mode": "custom",
                    "rules": {"segmentation": {"separator": "###", "max_tokens": 100}},
                }
            }
        )
        made = await client.post(
            f"{base}/document/create-by-file",
            files={"file": ("notes.md", f"{BEES}###{VOLCANO}".encode(), "text/markdown")},
            data={"data": data},
            headers=auth,
        )
        assert made.status_code == 200, made.text
        document = made.json()["document"]
        assert document["name"] == "notes.md"
        bad = await client.post(
            f"{base}/document/create-by-file",
            files={"file": ("a.txt", b"x")},
            data={"data": "{oops"},
            headers=auth,
        )
        assert assert_error(bad, 400, "invalid_param")["params"] == "data"
        await index(fresh_database)

        doc_url = f"{base}/documents/{document['id']}"
        detail = (await client.get(doc_url, headers=auth)).json()
        assert (detail["display_status"], detail["word_count"]) == (
            "available",
            len(BEES) + len(VOLCANO),
        )
        listed = (await client.get(f"{base}/documents?status=available", headers=auth)).json()
        assert [d["id"] for d in listed["data"]] == [document["id"]]

        chunks = (await client.get(f"{doc_url}/segments", headers=auth)).json()
        assert [s["content"] for s in chunks["data"]] == [BEES, VOLCANO]
        added = await client.post(
            f"{doc_url}/segments",
            json={"segments": [{"content": "Magnets attract iron."}]},
            headers=auth,
        )
        new_id = added.json()["data"][0]["id"]
        changed = await client.post(
            f"{doc_url}/segments/{new_id}",
            json={"segment": {"content": "Magnets attract nickel."}},
            headers=auth,
        )
        assert changed.json()["data"]["content"] == "Magnets attract nickel."
        hits = await client.post(f"{base}/retrieve", json={"query": "nickel"}, headers=auth)
        assert hits.json()["records"][0]["segment"]["id"] == new_id
        assert (
            await client.delete(f"{doc_url}/segments/{new_id}", headers=auth)
        ).status_code == 204

        disabled = await client.patch(
            f"{base}/documents/status/disable",
            json={"document_ids": [document["id"]]},
            headers=auth,
        )
        assert disabled.json() == {"result": "success"}
        nothing = await client.post(f"{base}/retrieve", json={"query": "volcano"}, headers=auth)
        assert nothing.json()["records"] == []
        assert (await client.delete(doc_url, headers=auth)).status_code == 204
        assert_error(await client.get(doc_url, headers=auth), 404, "not_found")


async def test_a_workspace_sees_only_its_own_knowledge(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        auth = await dataset_key(client)
        dataset = await create_dataset(client, auth)
        other = bearer(await login(client, *await add_member(fresh_database, "eve@example.com")))
        other_key = bearer(
            (await client.post("/console/api/datasets/api-keys", headers=other)).json()["token"]
        )
        assert_error(
            await client.get(f"/v1/datasets/{dataset['id']}", headers=other_key), 404, "not_found"
        )
        posted = await client.post(
            f"/v1/datasets/{dataset['id']}/document/create-by-text",
            json={"name": "x", "text": "y"},
            headers=other_key,
        )
        assert_error(posted, 404, "not_found")
        assert (await client.get("/v1/datasets", headers=other_key)).json()["total"] == 0


async def test_the_console_serves_the_same_operations(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = bearer(await setup_and_login(client))
        dataset = await create_dataset(client, token, prefix="/console/api")
        base = f"/console/api/datasets/{dataset['id']}"
        await client.post(
            f"{base}/document/create-by-text", json={"name": "bees", "text": BEES}, headers=token
        )
        await index(fresh_database)
        found = await client.post(f"{base}/hit-testing", json={"query": "waggle"}, headers=token)
        assert found.json()["records"][0]["segment"]["content"] == BEES
        reader = bearer(
            await login(
                client,
                *await add_member(
                    fresh_database, "r@example.com", role="normal", workspace_of="admin@example.com"
                ),
            )
        )
        assert (await client.get("/console/api/datasets", headers=reader)).json()["total"] == 1
        refused = await client.post("/console/api/datasets", json={"name": "mine"}, headers=reader)
        assert_error(refused, 403, "forbidden")


async def test_the_console_previews_chunks_before_indexing(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = bearer(await setup_and_login(client))
        body = "\n".join(f"Line {i}: {BEES}" for i in range(30))
        upload = await client.post(
            "/console/api/files/upload", files={"file": ("notes.txt", body.encode())}, headers=token
        )
        rule = {
            "mode": "custom",
            "rules": {"segmentation": {"separator": "\\n", "max_tokens": 100}},
        }
        estimate = await client.post(
            "/console/api/datasets/indexing-estimate",
            json={
                "info_list": {
                    "data_source_type": "upload_file",
                    "file_info_list": {"file_ids": [upload.json()["id"]]},
                },
                "process_rule": rule,
            },
            headers=token,
        )
        assert estimate.status_code == 200, estimate.text
        assert estimate.json()["total_segments"] == 30
        assert len(estimate.json()["preview"]) == 10
        assert estimate.json()["preview"][0]["content"] == f"Line 0: {BEES}"
        empty = await client.post(
            "/console/api/datasets/indexing-estimate", json={"text": "   "}, headers=token
        )
        assert "empty" in assert_error(empty, 400, "invalid_param")["message"]


async def test_indexing_can_be_paused_and_resumed(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        auth = await dataset_key(client)
        dataset = await create_dataset(client, auth)
        base = f"/v1/datasets/{dataset['id']}"
        made = (
            await client.post(
                f"{base}/document/create-by-text", json={"name": "b", "text": BEES}, headers=auth
            )
        ).json()
        doc = f"{base}/documents/{made['document']['id']}"
        paused = await client.patch(f"{doc}/processing/pause", headers=auth)
        assert paused.json() == {"result": "success"}
        await index(fresh_database)  # the queued run sees the pause and stops
        assert (await client.get(doc, headers=auth)).json()["indexing_status"] == "paused"
        assert_error(
            await client.patch(f"{doc}/processing/pause", headers=auth), 400, "invalid_param"
        )
        assert (await client.patch(f"{doc}/processing/resume", headers=auth)).status_code == 200
        await index(fresh_database)
        assert (await client.get(doc, headers=auth)).json()["indexing_status"] == "completed"


async def test_metadata_fields_values_and_filters(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        auth = await dataset_key(client)
        dataset = await create_dataset(client, auth)
        base = f"/v1/datasets/{dataset['id']}"
        year = (
            await client.post(
                f"{base}/metadata", json={"name": "year", "type": "number"}, headers=auth
            )
        ).json()
        team = (
            await client.post(
                f"{base}/metadata", json={"name": "team", "type": "string"}, headers=auth
            )
        ).json()
        bad = await client.post(
            f"{base}/metadata", json={"name": "Year!", "type": "number"}, headers=auth
        )
        assert assert_error(bad, 400, "invalid_param")["params"] == "name"
        ids = []
        for name, value in (("old", 2019), ("new", 2024)):
            made = await client.post(
                f"{base}/document/create-by-text", json={"name": name, "text": BEES}, headers=auth
            )
            ids.append(made.json()["document"]["id"])
            operation = {
                "document_id": ids[-1],
                "metadata_list": [{"id": year["id"], "name": "year", "value": value}],
            }
            assert (
                await client.post(
                    f"{base}/documents/metadata", json={"operation_data": [operation]}, headers=auth
                )
            ).status_code == 200
        wrong = {"document_id": ids[0], "metadata_list": [{"name": "year", "value": "soon"}]}
        assert_error(
            await client.post(
                f"{base}/documents/metadata", json={"operation_data": [wrong]}, headers=auth
            ),
            400,
            "invalid_param",
        )
        await index(fresh_database)

        listed = (await client.get(f"{base}/metadata", headers=auth)).json()["doc_metadata"]
        assert {(f["name"], f["count"]) for f in listed} == {("year", 2), ("team", 0)}
        query = {
            "query": "bees",
            "retrieval_model": {
                "search_method": "full_text_search",
                "top_k": 5,
                "metadata_filtering_conditions": {
                    "conditions": [{"name": "year", "comparison_operator": ">", "value": 2020}]
                },
            },
        }
        found = (await client.post(f"{base}/retrieve", json=query, headers=auth)).json()["records"]
        assert [r["segment"]["document"]["name"] for r in found] == ["new"]

        renamed = await client.patch(
            f"{base}/metadata/{year['id']}", json={"name": "published"}, headers=auth
        )
        assert renamed.json()["name"] == "published"
        query["retrieval_model"]["metadata_filtering_conditions"]["conditions"][0]["name"] = (
            "published"  # type: ignore[index]
        )
        found = (await client.post(f"{base}/retrieve", json=query, headers=auth)).json()["records"]
        assert [r["segment"]["document"]["name"] for r in found] == ["new"]
        assert (
            await client.delete(f"{base}/metadata/{team['id']}", headers=auth)
        ).status_code == 204
        assert [
            f["name"]
            for f in (await client.get(f"{base}/metadata", headers=auth)).json()["doc_metadata"]
        ] == ["published"]
