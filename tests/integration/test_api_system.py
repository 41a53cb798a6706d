"""Home page, liveness, readiness, and the error body of requests that go wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import text

from tests.support.api import api_client, assert_error
from tusk import __version__
from tusk.db.engine import engine_scope


async def test_home_page_says_tusk_is_running(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        response = await client.get("/")
        assert response.status_code == 200
        assert "Tusk is running" in response.text
        assert __version__ in response.text
        assert (await client.get("/health")).json() == {"status": "ok", "version": __version__}
        spec = (await client.get("/openapi.json")).json()
        assert "/console/api/login" in spec["paths"]


async def test_ready_names_the_failing_check_until_a_worker_beats(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        body = assert_error(await client.get("/ready"), 503, "not_ready")
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["schema"] == "ok"
        assert "worker" in body["message"]
        async with engine_scope(fresh_database) as engine, engine.begin() as conn:
            await conn.execute(text("INSERT INTO procrastinate_workers DEFAULT VALUES"))
        response = await client.get("/ready")
        assert response.status_code == 200
        assert response.json()["checks"] == {"database": "ok", "schema": "ok", "worker": "ok"}


async def test_unknown_paths_and_methods_get_dify_error_bodies(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        assert_error(await client.get("/no/such/path"), 404, "not_found")
        assert_error(await client.delete("/health"), 405, "method_not_allowed")


async def test_bad_json_and_missing_fields_are_invalid_params(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        body = assert_error(
            await client.post(
                "/console/api/login",
                content=b"{not json",
                headers={"content-type": "application/json"},
            ),
            400,
            "invalid_param",
        )
        assert "JSON" in body["message"]
        body = assert_error(
            await client.post("/console/api/login", json={"email": "a@example.com"}),
            400,
            "invalid_param",
        )
        assert body["params"] == "password"


async def test_oversized_bodies_are_refused_with_413(fresh_database: str) -> None:
    big = b"x" * (1024 * 1024 + 1)
    async with api_client(fresh_database, max_request_body_mb=1) as client:
        declared = await client.post(
            "/console/api/login", content=big, headers={"content-type": "application/json"}
        )
        assert_error(declared, 413, "request_entity_too_large")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        streamed = await client.post(
            "/console/api/login", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_error(streamed, 413, "request_entity_too_large")


async def test_cors_origins_are_configured_per_api(fresh_database: str) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    async with api_client(
        fresh_database,
        console_cors_allow_origins="https://console.example",
        web_api_cors_allow_origins="*",
    ) as client:
        allowed = await client.options(
            "/console/api/login", headers={**preflight, "Origin": "https://console.example"}
        )
        assert allowed.headers["access-control-allow-origin"] == "https://console.example"
        refused = await client.options(
            "/console/api/login", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in refused.headers
        service = await client.options(
            "/v1/info", headers={**preflight, "Origin": "https://any.example"}
        )
        assert service.headers["access-control-allow-origin"] == "*"
