"""Every Dify DSL file of the corpus (`../shared/dify-dsl` beside the repository, when present)
and of `tests/dsl/` imported over HTTP, and every workflow or chatflow whose nodes Tusk all
runs, run end to end: the fake OpenAI server stands in for every model provider the files name,
the Start form is filled with plausible values (files uploaded through the console), and the run
and one row per executed node must be in `workflow_runs` and `workflow_node_executions`.

Each file's expected outcome is in EXPECTED (what was measured, with the reason when a run does
not succeed). With `TUSK_CORPUS_REPORT=FILE`, the measured results are also written to FILE as a
Markdown table (the "runs end to end" section of docs/workflow-dsl-corpus.md)."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from starlette.responses import Response

from tests.support.api import SECRET, bearer, make_settings, setup_and_login
from tests.support.documents import pdf
from tusk.api.app import create_app
from tusk.apps import store as app_store
from tusk.apps.workflow_app import start_form
from tusk.db.engine import engine_scope
from tusk.runtime import Runtime
from tusk.testing.llm_server import RecordedRequest, Reply, text_of
from tusk.testing.openai_server import FakeOpenAI
from tusk.workflow import store
from tusk.workflow.dsl import WORKFLOW_MODES, DslError, ImportedApp, read_dsl
from tusk.workflow.events import ContainerCompleted, NodeFinished, WorkflowFinished
from tusk.workflow.files import UploadResolver
from tusk.workflow.inputs import check_inputs
from tusk.workflow.nodes.flow import StartVariable
from tusk.workflow.providers import graph_model_refs, model_config_refs
from tusk.workflow.runner import RunRequest, WorkflowRunner

# The corpus lives beside the repository, in ../shared/dify-dsl, where there is one.
CORPUS = Path(os.environ.get("TUSK_DSL_CORPUS", Path(__file__).parents[3] / "shared" / "dify-dsl"))
FIXTURES = Path(__file__).parent.parent / "dsl"
KEY = "sk-corpus-runs"
PROVIDERS = "/console/api/workspaces/current/model-providers"
LOOPBACK_MARKER = "http://tusk-loopback.invalid"  # own fixtures call the loopback server here
QUERY = "Please summarise the attached material in two sentences."
# The events that end one node's execution (an iteration or a loop ends with its own).
FINISH_EVENTS = frozenset({"node_finished", "iteration_completed", "loop_completed"})


def corpus_files() -> list[Path]:
    own = sorted(FIXTURES.glob("*.yml"))
    shared = sorted(CORPUS.glob("*.yml")) if CORPUS.is_dir() else []
    return own + shared


# --- what each file is expected to do -----------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """How a run ends: its status, and parts of its description (the failed nodes and why).
    With `host`, the run needs that internet host; where it resolves, the run may get further,
    so only its end is checked."""

    status: str = "succeeded"
    parts: tuple[str, ...] = ()
    host: str = ""
    outputs: tuple[tuple[str, str], ...] = ()  # (output, a part of its value)


def offline(host: str) -> Expect:
    return Expect("failed", (f"cannot resolve '{host}'",), host)


# Sandboxed code may import only the standard library (and packages an operator adds).
NO_REQUESTS = "module 'requests' is not allowed in code"
EXPECTED: dict[str, Expect] = {
    # Tusk's own: every node's output reaches the end (the loopback server echoes the query).
    "tusk-nodes-workflow.yml": Expect(
        outputs=(
            ("note", "(GET): level=short, q=Tusk+runs+Dify+workflows+on+PostgreSQL."),
            ("note", "; growth 1; 1 rounds; sample"),
            ("pages", "revenue grew by 12 percent"),
        )
    ),
    "tusk-nodes-chatflow.yml": Expect(
        outputs=(("answer", "A short answer from the test model. (turn 1)"),)
    ),
    "awesome-dify-workflow-text-to-card.yml": offline("api.imgrender.cn"),
    "svcvit__Awesome-Dify-Workflow__DSL_Text_to_Card_Iteration.yml": offline("api.imgrender.cn"),
    "wwwzhouhui__dify-for-dsl__dsl_74-dify案例分享-解锁_AI_搜索新玩法_Dify_秘塔搜索工作流搭建教程"
    "与效果展示.yml": offline("metaso.cn"),
    # Nodes with an error strategy fail; the run goes on with their default values.
    "dify-dsl-4-redteam-bee.yml": Expect("partial-succeeded", (NO_REQUESTS,)),
    "din4e__DifyDSL4RedTeam__dsl_bee.yml": Expect("partial-succeeded", (NO_REQUESTS,)),
    "svcvit__Awesome-Dify-Workflow__DSL_Form表单聊天Demo.yml": Expect("failed", (NO_REQUESTS,)),
    "svcvit__Awesome-Dify-Workflow__DSL_runLLMCode.yml": Expect(
        "failed", ("module 'pandas' is not allowed in code",)
    ),
    # The knowledge bases are those of the exporting Dify workspace.
    "BannyLon__DifyAIA__Dify_workflow_知识库图像检索与展示.yml": Expect(
        "failed", ("knowledge-retrieval node '知识检索' failed: unknown dataset ids",)
    ),
    # Its code nodes read SVG and design_idea from a JSON answer the test model does not give.
    "Carinalin__DifyDSLHub__Logo_生成器_SVGLogo生成器.yml": Expect(
        "failed", ("TypeError: 'NoneType' object is not subscriptable",)
    ),
    # Its HTTP request goes to its author's private network, which the SSRF guard refuses.
    "wwwzhouhui__dify-for-dsl__dsl_股票分析系统-Gordon修改版.yml": Expect(
        "failed", ("Refused to connect to 192.168.88.202: it is a private address",)
    ),
    # "is empty" is no comparison operator of Dify's either ("empty" is).
    "Yuta-95__dify-dsl-templates__templates_housing-loan_housing-loan-v1.0.0.yml": Expect(
        "failed", ("unknown comparison operator 'is empty'",)
    ),
}


def resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def check(expected: Expect, ran: Ran) -> None:
    described = describe(ran)
    if expected.host and resolves(expected.host):
        assert ran.status in ("succeeded", "partial-succeeded", "failed"), described
        return
    assert ran.status == expected.status, described
    for part in expected.parts:
        assert part in described, described
    for name, part in expected.outputs:
        assert part in str(ran.outputs.get(name)), ran.outputs


# --- a model that answers every provider -------------------------------------------------------


def _plausible(schema: Mapping[str, Any]) -> Any:
    """A value of the JSON Schema's type (objects with every property), so that a parameter
    extractor or a structured output gets one of each."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "array":
        return [_plausible(schema.get("items") or {"type": "string"})]
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: _plausible(spec) for name, spec in properties.items()}
    return {"number": 1, "integer": 1, "boolean": True}.get(str(kind), "sample")


def _json_after(marker: str, prompt: str) -> Any:
    """The JSON value written right after `marker` in the prompt, or None."""
    start = prompt.find(marker)
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(prompt[start + len(marker) :].lstrip())
    except ValueError:
        return None
    return value


def structured_answer(prompt: str) -> str:
    """A classifier's first category, a parameter extractor's or a structured output's JSON, or
    else a short sentence."""
    categories = _json_after("Categories: ", prompt)
    if isinstance(categories, list) and categories and isinstance(categories[0], dict):
        first = {key: categories[0].get(key) for key in ("category_id", "category_name")}
        return json.dumps(first, ensure_ascii=False)
    for marker in ("Parameters (JSON Schema): ", "JSON Schema:\n"):
        schema = _json_after(marker, prompt)
        if isinstance(schema, dict):
            return json.dumps(_plausible(schema), ensure_ascii=False)
    return "A short answer from the test model."


class CorpusModel(FakeOpenAI):
    """FakeOpenAI whose unscripted replies suit the node that asks (see `structured_answer`).
    The whole prompt is read: a structured output's schema is in the system message."""

    async def _chat(self, request: RecordedRequest) -> Response:
        messages = request.json.get("messages") if isinstance(request.json, dict) else None
        texts = [text_of(m.get("content")) for m in messages or [] if isinstance(m, dict)]
        # The reply is chosen before the handler's first await, so no other call interleaves.
        self._prompt = "\n".join(texts)
        return await super()._chat(request)

    def next_reply(self, last_user: str) -> Reply:
        return Reply(structured_answer(getattr(self, "_prompt", last_user)))


# --- a loopback HTTP server for the own fixtures' http-request nodes ---------------------------


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with JSON describing it."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        payload = json.dumps({"method": self.command, "path": self.path, "body": body}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def loopback() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# --- one API, one workspace, every provider mapped to the fake ---------------------------------


@dataclass
class Console:
    client: httpx.AsyncClient
    app: FastAPI
    token: str
    results: dict[str, str] = field(default_factory=dict)  # file -> the measured outcome

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@pytest.fixture(scope="module")
def model() -> Iterator[CorpusModel]:
    with CorpusModel(api_key=KEY) as fake:
        yield fake


@asynccontextmanager
async def api_app(conninfo: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(sandbox_pool_size=1, ssrf_allowed_hosts="127.0.0.1")
    app = create_app(Runtime(settings, conninfo, SECRET, embedded=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tusk") as client:
            yield app, client


def named_models(paths: Sequence[Path]) -> dict[str, set[tuple[str, str]]]:
    """Tusk provider -> (model, model type) for every model the files name."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path in paths:
        try:
            imported = read_dsl(path.read_text(encoding="utf-8"))
        except DslError:  # a file that cannot be read names no model; its import test says why
            continue
        for ref, kind in _refs(imported):
            found.setdefault(ref.tusk_provider, set()).add((ref.model, kind))
    return found


def _refs(imported: ImportedApp) -> Iterator[tuple[Any, str]]:
    if imported.workflow is not None:
        refs = graph_model_refs(imported.workflow.graph)
    else:
        refs = model_config_refs(imported.model_config or {})
    for ref in refs:
        kind = "rerank" if "rerank" in ref.where else "llm"
        kind = "text-embedding" if "vector_setting" in ref.where else kind
        yield ref, kind


async def map_providers(console: Console, fake: FakeOpenAI) -> None:
    """OpenAI's credentials point at the fake; every other provider named is a custom
    OpenAI-compatible endpoint of that name, at the fake too."""
    body = {"credentials": {"api_key": KEY, "base_url": fake.base_url}}
    reply = await console.client.post(
        f"{PROVIDERS}/openai/credentials", json=body, headers=console.headers
    )
    assert reply.status_code == 200, reply.text
    for provider, models in sorted(named_models(corpus_files()).items()):
        if provider in ("openai", "anthropic", ""):
            continue
        custom = {
            "name": provider,
            "base_url": fake.base_url,
            "api_key": KEY,
            "models": [{"model": m, "model_type": t} for m, t in sorted(models) if m],
        }
        added = await console.client.post(
            f"{PROVIDERS}/custom", json=custom, headers=console.headers
        )
        assert added.status_code == 201, (provider, added.text)
    # Nodes that name no model use the workspace's default, as in Dify.
    default = {"model_settings": [{"model_type": "llm", "provider": "openai", "model": "gpt-4o"}]}
    chosen = await console.client.post(
        "/console/api/workspaces/current/default-model", json=default, headers=console.headers
    )
    assert chosen.status_code == 200, chosen.text


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def console(database: str, model: CorpusModel) -> AsyncIterator[Console]:
    async with api_app(database) as (app, client):
        made = Console(client, app, await setup_and_login(client))
        await map_providers(made, model)
        yield made
        write_report(made.results)


def write_report(results: Mapping[str, str]) -> None:
    """The measured outcomes as a Markdown table, where TUSK_CORPUS_REPORT says."""
    target = os.environ.get("TUSK_CORPUS_REPORT")
    if not target:
        return
    lines = ["| file | run |", "|---|---|"]
    lines += [f"| `{name}` | {outcome.replace('|', '/')} |" for name, outcome in results.items()]
    Path(target).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- Start inputs -------------------------------------------------------------------------------


def tiny_png() -> bytes:
    """A real 1x1 PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x80\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def sample_file(field_: StartVariable) -> tuple[str, bytes, str]:
    """A small real file the field accepts: a PDF for documents, else a PNG image."""
    kinds = set(field_.allowed_file_types) or {"document"}
    extensions = {e.lower().lstrip(".") for e in field_.allowed_file_extensions}
    if "document" in kinds or "pdf" in extensions or ("custom" in kinds and not extensions):
        lines = ["Quarterly report: revenue grew by 12 percent.", "Costs stayed flat."]
        return "report.pdf", pdf([lines], title="Report"), "application/pdf"
    if "txt" in extensions or "md" in extensions:
        return "notes.txt", b"Revenue grew by 12 percent.\n", "text/plain"
    return "pixel.png", tiny_png(), "image/png"


async def upload(console: Console, field_: StartVariable) -> dict[str, Any]:
    name, data, mime = sample_file(field_)
    reply = await console.client.post(
        "/console/api/files/upload", files={"file": (name, data, mime)}, headers=console.headers
    )
    assert reply.status_code == 201, reply.text
    kind = "document" if mime == "application/pdf" or mime == "text/plain" else "image"
    return {"transfer_method": "local_file", "upload_file_id": reply.json()["id"], "type": kind}


async def plausible_input(console: Console, field_: StartVariable) -> Any:
    kind = field_.type
    if kind == "select":
        return field_.options[0] if field_.options else "a"
    if kind == "number":
        return 1
    if kind == "checkbox":
        return True
    if kind == "json_object":
        return {}
    if kind == "file":
        return await upload(console, field_)
    if kind == "file-list":
        return [await upload(console, field_)]
    sample = "Tusk runs Dify workflows on PostgreSQL."
    return sample[: field_.max_length] if field_.max_length else sample


async def start_inputs(console: Console, form: Sequence[StartVariable]) -> dict[str, Any]:
    return {f.variable: await plausible_input(console, f) for f in form}


def start_form_of(graph: Mapping[str, Any]) -> list[StartVariable]:
    for node in graph.get("nodes") or []:
        data = node.get("data") or {}
        if data.get("type") == "start" and not node.get("parentId"):
            return [StartVariable.model_validate(v) for v in data.get("variables") or []]
    return []


# --- runs ------------------------------------------------------------------------------------


@dataclass
class Ran:
    run_id: str
    status: str
    error: str
    finished_nodes: Counter[str]  # node id -> executions, from the run's events
    problems: list[str] = field(default_factory=list)  # nodes that did not succeed, and why
    outputs: dict[str, Any] = field(default_factory=dict)


def problem(node_type: str, title: str, status: str, error: str | None) -> str | None:
    if status == "succeeded":
        return None
    return f"{node_type} node '{title}' {status}: {error or ''}".rstrip(": ")


def sse_events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def run_workflow_draft(console: Console, app_id: str, inputs: dict[str, Any]) -> Ran:
    reply = await console.client.post(
        f"/console/api/apps/{app_id}/workflows/draft/run",
        json={"inputs": inputs},
        headers=console.headers,
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    events = sse_events(reply.text)
    finished = next(e["data"] for e in events if e["event"] == "workflow_finished")
    done = [e["data"] for e in events if e["event"] in FINISH_EVENTS]
    nodes = Counter(d["node_id"] for d in done)
    problems = [problem(d["node_type"], d["title"], d["status"], d["error"]) for d in done]
    return Ran(
        finished["id"],
        finished["status"],
        finished["error"] or "",
        nodes,
        [p for p in problems if p],
        finished["outputs"] or {},
    )


def conversation_defaults(variables: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Conversation variables at their declared values, as a new conversation starts them."""
    return {str(v["name"]): v.get("value") for v in variables if v.get("name")}


async def run_chatflow_draft(console: Console, app_id: str, inputs: dict[str, Any]) -> Ran:
    """A chatflow's first turn, through the runner (no chat endpoint exists yet)."""
    services = console.app.state.services
    runner: WorkflowRunner = console.app.state.workflows
    async with services.transaction() as db:
        row = (await db.execute(text("SELECT workspace_id FROM apps WHERE id = :id"),
                                {"id": app_id})).scalar_one()  # fmt: skip
        app = await app_store.get_app(db, row, uuid.UUID(app_id))
        workflow = await store.get_draft(db, row, app.id)
        plan = runner.plan(app, workflow)
        checked = await check_inputs(start_form(plan), inputs, UploadResolver(db, row))
    system = {"query": QUERY, "files": [], "conversation_id": str(uuid.uuid4()),
              "dialogue_count": 1}  # fmt: skip
    request = RunRequest(
        app=app,
        workflow=workflow,
        inputs=checked,
        user_id="corpus-test",
        created_by_role="account",
        created_by=None,
        triggered_from="debugging",
        system=system,
        conversation=conversation_defaults(workflow.conversation_variables or []),
    )
    handle = runner.start(request)
    ran = Ran(str(handle.run_id), "", "", Counter())
    async for event in handle.events():
        if isinstance(event, NodeFinished | ContainerCompleted):
            node = event.node
            ran.finished_nodes[node.node_id] += 1
            found = problem(node.node_type, node.title, node.status, node.error)
            ran.problems += [found] if found else []
        elif isinstance(event, WorkflowFinished):
            ran.status, ran.error = event.run.status, event.run.error or ""
            ran.outputs = dict(event.run.outputs)
    return ran


async def recorded(conninfo: str, run_id: str) -> tuple[str, Counter[str]]:
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        status = (
            await conn.execute(text("SELECT status FROM workflow_runs WHERE id = :id"),
                               {"id": run_id})
        ).scalar_one()  # fmt: skip
        rows = await conn.execute(
            text("SELECT node_id FROM workflow_node_executions WHERE workflow_run_id = :id"),
            {"id": run_id},
        )
        return status, Counter(r.node_id for r in rows)


# --- the test --------------------------------------------------------------------------------


def prepared(path: Path, loopback: str) -> str:
    return path.read_text(encoding="utf-8").replace(LOOPBACK_MARKER, loopback)


async def import_over_http(console: Console, content: str) -> dict[str, Any]:
    reply = await console.client.post(
        "/console/api/apps/imports",
        json={"mode": "yaml-content", "yaml_content": content},
        headers=console.headers,
    )
    body: dict[str, Any] = reply.json()
    return body


def describe(ran: Ran) -> str:
    return "; ".join([ran.status, *ran.problems])


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
async def test_file_imports_and_runs_end_to_end(
    path: Path, console: Console, database: str, model: CorpusModel, loopback: str
) -> None:
    content = prepared(path, loopback)
    local = read_dsl(content)
    body = await import_over_http(console, content)
    assert body["status"] == local.status, body
    assert body["status"] in ("completed", "completed-with-warnings"), body
    assert body["app_mode"] == local.mode
    for issue in local.unsupported:  # every node Tusk cannot run is named to the importer
        assert any(issue.node_id in warning for warning in body["warnings"]), issue
    expected = EXPECTED.get(path.name, Expect())
    if local.workflow is None or local.mode not in WORKFLOW_MODES or local.unsupported:
        blocked = sorted({issue.type for issue in local.unsupported})
        console.results[path.name] = "not run: " + (
            f"cannot run {', '.join(blocked)}" if blocked else f"{local.mode} app, no workflow"
        )
        return
    inputs = await start_inputs(console, start_form_of(local.workflow.graph))
    if local.mode == "workflow":
        ran = await run_workflow_draft(console, body["app_id"], inputs)
    else:
        ran = await run_chatflow_draft(console, body["app_id"], inputs)
    console.results[path.name] = describe(ran)
    status, rows = await recorded(database, ran.run_id)
    assert status == ran.status
    assert rows == ran.finished_nodes  # one row per executed node
    assert ran.finished_nodes, "no node ran"
    check(expected, ran)


def test_every_expectation_names_a_file() -> None:
    names = {path.name for path in corpus_files()}
    own = {name for name in EXPECTED if (FIXTURES / name).is_file()}
    unknown = [name for name in EXPECTED if name not in names and CORPUS.is_dir()]
    assert unknown == []
    assert own >= {"tusk-nodes-workflow.yml", "tusk-nodes-chatflow.yml"}
