"""Code, template-transform, HTTP request, document-extractor and list-operator nodes run through
the engine with real parts: the bubblewrap sandbox, a real HTTP server on loopback (reached only
through the SSRF allow-list), files in the database's storage, and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import pytest_asyncio

from tests.support.documents import pdf
from tests.support.knowledge import new_workspace, services_on
from tests.support.workflow import Outcome, chain, edge, node, run_graph
from tusk.sandbox import Limits, Sandbox, SandboxConfig
from tusk.services import Services
from tusk.storage import iter_bytes
from tusk.uploads import Uploader, save_upload
from tusk.workflow.context import Resources
from tusk.workflow.files import file_value
from tusk.workflow.values import is_file

pytestmark = pytest.mark.asyncio(loop_scope="module")
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (apt-get install bubblewrap)"
)
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


# --- a real HTTP server on loopback ------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """/echo describes the request as JSON; /report.csv is a CSV attachment; /status/N answers N;
    /to?url=X redirects to X; /big sends 2 MB of text."""

    def _route(self) -> None:
        path = urlsplit(self.path).path
        query = dict(parse_qsl(urlsplit(self.path).query))
        if path == "/echo":
            self._echo()
        elif path == "/report.csv":
            self._reply(200, b"city,people\nLyon,520000\n", "text/csv", attachment="report.csv")
        elif path.startswith("/status/"):
            self._reply(int(path.rsplit("/", 1)[1]), b"nope", "text/plain")
        elif path == "/to":
            self.send_response(302)
            self.send_header("Location", query["url"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/big":
            self._reply(200, b"x" * (2 * 1024 * 1024), "text/plain")
        else:
            self._reply(404, b"unknown", "text/plain")

    do_GET = do_POST = do_PUT = _route

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        described = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        self._reply(200, json.dumps(described).encode(), "application/json", extra="yes")

    def _reply(
        self, status: int, body: bytes, content_type: str, attachment: str = "", extra: str = ""
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if attachment:
            self.send_header("Content-Disposition", f'attachment; filename="{attachment}"')
        if extra:
            self.send_header("X-Extra", extra)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# --- services, resources and a workspace -------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(database: str) -> AsyncIterator[Services]:
    async with services_on(database, sandbox_pool_size=1, ssrf_allowed_hosts="127.0.0.1") as made:
        yield made


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def workspace(services: Services) -> uuid.UUID:
    return await new_workspace(services)


def resources_of(services: Services, **settings: Any) -> Resources:
    return Resources(
        settings=services.settings.model_copy(update=settings),
        sessions=services.sessions,
        storage=services.storage,
        models=services.models,
        sandbox=services.sandbox,
    )


@pytest.fixture(scope="module")
def resources(services: Services) -> Resources:
    return resources_of(services)


START = node(
    "start",
    "start",
    variables=[{"variable": name, "type": "text-input"} for name in ("x", "items", "file")],
)


def end_of(node_id: str, *names: str) -> dict[str, Any]:
    outputs = [{"variable": name, "value_selector": [node_id, name]} for name in names]
    return node("end", "end", outputs=outputs)


async def run_one(
    resources: Resources,
    workspace: uuid.UUID,
    tested: dict[str, Any],
    inputs: dict[str, Any] | None = None,
) -> Outcome:
    return await run_graph(
        [START, tested, node("end", "end", outputs=[])],
        chain("start", tested["id"], "end"),
        inputs or {},
        resources=resources,
        workspace_id=workspace,
    )


def failed_with(outcome: Outcome) -> str:
    assert outcome.state.status == "failed", outcome.state
    return outcome.state.error or ""


# --- code --------------------------------------------------------------------------------------


def code_node(code: str, outputs: dict[str, Any], language: str = "python3") -> dict[str, Any]:
    return node(
        "code",
        "code",
        code_language=language,
        code=code,
        variables=[
            {"variable": "x", "value_selector": ["start", "x"]},
            {"variable": "items", "value_selector": ["start", "items"]},
        ],
        outputs=outputs,
    )


PY_CODE = """
def main(x: int, items: list) -> dict:
    return {
        "total": x + sum(items),
        "label": f"n={x}",
        "flags": [i > 1 for i in items],
        "doc": {"inner": {"ok": True}, "count": len(items)},
        "rows": [{"v": i} for i in items],
        "yes": True,
    }
"""
PY_OUTPUTS = {
    "total": {"type": "number"},
    "label": {"type": "string"},
    "flags": {"type": "array[boolean]"},
    "doc": {"type": "object", "children": None},
    "rows": {"type": "array[object]", "children": {"v": {"type": "number"}}},
    "yes": {"type": "boolean"},
}


@needs_bwrap
async def test_python_code_outputs_are_checked_and_typed(
    resources: Resources, workspace: uuid.UUID
) -> None:
    outcome = await run_one(
        resources, workspace, code_node(PY_CODE, PY_OUTPUTS), {"x": 2, "items": [1, 2, 3]}
    )
    assert outcome.state.status == "succeeded", outcome.state.error
    assert outcome.outputs("code") == {
        "total": 8,
        "label": "n=2",
        "flags": [False, True, True],
        "doc": {"inner": {"ok": True}, "count": 3},
        "rows": [{"v": 1}, {"v": 2}, {"v": 3}],
        "yes": True,
    }
    assert outcome.finished("code")[0].node.inputs == {"x": 2, "items": [1, 2, 3]}


@needs_bwrap
@needs_node
async def test_javascript_code_under_its_nodejs_name(
    resources: Resources, workspace: uuid.UUID
) -> None:
    code = "function main({x, items}) { return {total: x * 10, names: items.map(String)} }"
    outputs = {"total": {"type": "number"}, "names": {"type": "array[string]"}}
    outcome = await run_one(
        resources, workspace, code_node(code, outputs, "nodejs"), {"x": 4, "items": [1, 2]}
    )
    assert outcome.outputs("code") == {"total": 40, "names": ["1", "2"]}


@needs_bwrap
@pytest.mark.parametrize(
    ("code", "outputs", "message"),
    [
        ("def main(x, items):\n    return {'a': 1\n", {"a": {"type": "number"}}, "line 2"),
        ("def main(x, items):\n    return {'a': 1 / 0}\n", {"a": {"type": "number"}}, "line 2"),
        ("def main(x, items):\n    return {'a': 5}\n", {"a": {"type": "string"}}, "a must be"),
        ("def main(x, items):\n    return {'a': 's', 'b': 1}\n", {"a": {"type": "string"}}, "b"),
        ("def main(x, items):\n    return {}\n", {"a": {"type": "string"}}, "did not return"),
        (
            "def main(x, items):\n    return {'a': ['s'] * 31}\n",
            {"a": {"type": "array[string]"}},
            "31 items; the limit is 30",
        ),
        (
            "def main(x, items):\n    return {'a': 2**70}\n",
            {"a": {"type": "number"}},
            "out of range",
        ),
        (
            "def main(x, items):\n    return {'a': {'b': {'c': {'d': {'e': {'f': 1}}}}}}\n",
            {"a": {"type": "object"}},
            "deeper than 5",
        ),
    ],
)
async def test_code_errors_say_what_to_fix(
    resources: Resources, workspace: uuid.UUID, code: str, outputs: dict[str, Any], message: str
) -> None:
    outcome = await run_one(resources, workspace, code_node(code, outputs), {"x": 1, "items": []})
    error = failed_with(outcome)
    assert message in error
    assert outcome.finished("code")[0].node.error_type in (
        "CodeExecutionError",
        "OutputValidationError",
        "DepthLimitError",
    )


@needs_bwrap
async def test_code_timeout_is_a_node_error(resources: Resources, workspace: uuid.UUID) -> None:
    async with Sandbox(SandboxConfig(limits=Limits(timeout=1.0), pool_size=0)) as short:
        code = "def main(x, items):\n    while True:\n        pass\n"
        outcome = await run_one(
            replace(resources, sandbox=short), workspace, code_node(code, {"a": {"type": "number"}})
        )
    assert "time" in failed_with(outcome)
    assert outcome.finished("code")[0].node.error_type == "CodeExecutionError"


# --- template transform ------------------------------------------------------------------------


def template_node(template: str) -> dict[str, Any]:
    variables = [
        {"variable": "x", "value_selector": ["start", "x"]},
        {"variable": "items", "value_selector": ["start", "items"]},
    ]
    return node("tt", "template-transform", template=template, variables=variables)


async def test_template_renders_jinja2(resources: Resources, workspace: uuid.UUID) -> None:
    template = "Hi {{ x }}:{% for i in items %} {{ i.name | upper }}{% endfor %}"
    items = [{"name": "ann"}, {"name": "bo"}]
    outcome = await run_one(
        resources, workspace, template_node(template), {"x": "you", "items": items}
    )
    assert outcome.outputs("tt") == {"output": "Hi you: ANN BO"}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("ok\n{% for %}", "syntax error (line 2)"),
        ("a\nb\n{{ x / 0 }}", "(line 3)"),
        ("{{ x.__class__.__mro__ }}", "SecurityError"),
    ],
)
async def test_template_errors_give_the_line(
    resources: Resources, workspace: uuid.UUID, template: str, message: str
) -> None:
    outcome = await run_one(resources, workspace, template_node(template), {"x": 1, "items": []})
    assert message in failed_with(outcome)


# --- list operator -----------------------------------------------------------------------------


def list_node(**config: Any) -> dict[str, Any]:
    return node("lo", "list-operator", variable=["start", "items"], **config)


async def test_list_filter_order_limit(resources: Resources, workspace: uuid.UUID) -> None:
    config = {
        "filter_by": {
            "enabled": True,
            "conditions": [{"comparison_operator": "≥", "value": "{{#start.x#}}"}],
        },
        "order_by": {"enabled": True, "value": "desc"},
        "limit": {"enabled": True, "size": 2},
    }
    outcome = await run_one(
        resources, workspace, list_node(**config), {"x": 3, "items": [5, 1, 3, 9, 2]}
    )
    assert outcome.outputs("lo") == {"result": [9, 5], "first_record": 9, "last_record": 5}


async def test_list_extract_and_strings(resources: Resources, workspace: uuid.UUID) -> None:
    config = {
        "filter_by": {
            "enabled": True,
            "conditions": [{"comparison_operator": "contains", "value": "a"}],
        },
        "extract_by": {"enabled": True, "serial": "2"},
    }
    items = ["apple", "kiwi", "banana", "pear"]
    outcome = await run_one(resources, workspace, list_node(**config), {"items": items})
    assert outcome.outputs("lo") == {
        "result": ["banana"],
        "first_record": "banana",
        "last_record": "banana",
    }
    config["extract_by"] = {"enabled": True, "serial": "9"}
    failed = await run_one(resources, workspace, list_node(**config), {"items": items})
    assert "between 1 and 3" in failed_with(failed)


async def test_list_of_files_by_extension_and_size(
    resources: Resources, workspace: uuid.UUID
) -> None:
    files = [
        {"dify_model_identity": "__dify__file__", "filename": n, "extension": e, "size": s}
        for n, e, s in (("a.pdf", ".pdf", 30), ("b.txt", ".txt", 10), ("c.pdf", ".pdf", 20))
    ]
    config = {
        "filter_by": {
            "enabled": True,
            "conditions": [{"key": "extension", "comparison_operator": "is", "value": "pdf"}],
        },
        "order_by": {"enabled": True, "key": "size", "value": "asc"},
    }
    outcome = await run_one(resources, workspace, list_node(**config), {"items": files})
    names = [f["filename"] for f in outcome.outputs("lo")["result"]]
    assert names == ["c.pdf", "a.pdf"]


async def test_list_empty_and_wrong_types(resources: Resources, workspace: uuid.UUID) -> None:
    empty = await run_one(resources, workspace, list_node(), {"items": []})
    assert empty.outputs("lo") == {"result": [], "first_record": None, "last_record": None}
    wrong = await run_one(resources, workspace, list_node(), {"items": {"a": 1}})
    assert "is object" in failed_with(wrong)


# --- HTTP request ------------------------------------------------------------------------------


def http_node(url: str, **config: Any) -> dict[str, Any]:
    config.setdefault("method", "get")
    config.setdefault("authorization", {"type": "no-auth"})
    config.setdefault("headers", "")
    config.setdefault("params", "")
    return node("http", "http-request", url=url, **config)


async def test_get_with_params_headers_and_bearer(
    server: str, resources: Resources, workspace: uuid.UUID
) -> None:
    tested = http_node(
        server + "/echo",
        params="q:{{#start.x#}}\nlang: fr",
        headers="X-Who: {{#start.x#}}\nAccept:text/plain",
        authorization={"type": "api-key", "config": {"type": "bearer", "api_key": "s3cret"}},
    )
    outcome = await run_one(resources, workspace, tested, {"x": "zoë"})
    assert outcome.state.status == "succeeded", outcome.state.error
    outputs = outcome.outputs("http")
    assert outputs["status_code"] == 200
    assert outputs["files"] == []
    assert outputs["headers"]["x-extra"] == "yes"
    assert outputs["headers"]["content-type"] == "application/json"
    echoed = json.loads(outputs["body"])
    assert echoed["method"] == "GET"
    assert echoed["path"] == "/echo?q=zo%C3%AB&lang=fr"
    assert echoed["headers"]["x-who"] == "zoë".encode().decode("latin-1")
    assert echoed["headers"]["authorization"] == "Bearer s3cret"
    log = outcome.finished("http")[0].node.process_data or {}
    assert "s3cret" not in log["request"]
    assert log["request"].startswith("GET /echo?q=zo%C3%AB&lang=fr HTTP/1.1")


@pytest.mark.parametrize(
    ("body", "content_type", "sent"),
    [
        ({"type": "json", "data": [{"type": "text", "value": '{"n": {{#start.x#}}}'}]},
         "application/json", '{"n":7}'),
        ({"type": "raw-text", "data": [{"type": "text", "value": "n={{#start.x#}}"}]},
         "text/plain", "n=7"),
        ({"type": "x-www-form-urlencoded",
          "data": [{"type": "text", "key": "n", "value": "{{#start.x#}}"}]},
         "application/x-www-form-urlencoded", "n=7"),
    ],
)  # fmt: skip
async def test_post_bodies(
    server: str,
    resources: Resources,
    workspace: uuid.UUID,
    body: dict[str, Any],
    content_type: str,
    sent: str,
) -> None:
    outcome = await run_one(
        resources, workspace, http_node(server + "/echo", method="POST", body=body), {"x": 7}
    )
    echoed = json.loads(outcome.outputs("http")["body"])
    assert echoed["headers"]["content-type"] == content_type
    assert echoed["body"].replace(" ", "") == sent


async def test_form_data_without_files_is_multipart(
    server: str, resources: Resources, workspace: uuid.UUID
) -> None:
    body = {"type": "form-data", "data": [{"type": "text", "key": "n", "value": "{{#start.x#}}"}]}
    tested = http_node(server + "/echo", method="post", body=body)
    outcome = await run_one(resources, workspace, tested, {"x": 7})
    echoed = json.loads(outcome.outputs("http")["body"])
    assert echoed["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert 'name="n"\r\n\r\n7\r\n' in echoed["body"]


async def test_error_status_is_an_output_unless_the_node_handles_errors(
    server: str, resources: Resources, workspace: uuid.UUID
) -> None:
    plain = await run_one(resources, workspace, http_node(server + "/status/404"))
    assert plain.outputs("http")["status_code"] == 404
    assert plain.outputs("http")["body"] == "nope"
    handled = http_node(server + "/status/500", error_strategy="fail-branch")
    recover = node("recover", "end", outputs=[])
    outcome = await run_graph(
        [START, handled, node("end", "end", outputs=[]), recover],
        [edge("start", "http"), edge("http", "end"), edge("http", "recover", "fail-branch")],
        resources=resources,
        workspace_id=workspace,
    )
    assert outcome.finished("recover")
    record = outcome.finished("http")[0].node
    assert record.error == "Request failed with status code 500"
    assert record.error_type == "HTTPResponseCodeError"


async def test_loopback_and_metadata_refused_without_the_allow_list(
    server: str, services: Services, workspace: uuid.UUID
) -> None:
    closed = resources_of(services, ssrf_allowed_hosts="")
    for url in (server + "/echo", "http://169.254.169.254/latest/meta-data/"):
        outcome = await run_one(closed, workspace, http_node(url, timeout={"connect": 1}))
        error = failed_with(outcome)
        assert "Refused to connect" in error
        assert "TUSK_SSRF_ALLOWED_HOSTS" in error
        assert urlsplit(url).hostname in error


async def test_redirect_to_a_private_address_is_refused(
    server: str, resources: Resources, workspace: uuid.UUID
) -> None:
    followed = await run_one(resources, workspace, http_node(server + "/to?url=/status/201"))
    assert followed.outputs("http")["status_code"] == 201
    refused = await run_one(
        resources, workspace, http_node(server + "/to?url=http://10.1.2.3/admin")
    )
    assert "10.1.2.3" in failed_with(refused)


async def test_response_text_size_limit(
    server: str, resources: Resources, workspace: uuid.UUID
) -> None:
    outcome = await run_one(resources, workspace, http_node(server + "/big"))
    assert "the limit is 1048576 bytes" in failed_with(outcome)


async def test_file_response_is_stored_and_extracted(
    server: str, resources: Resources, workspace: uuid.UUID
) -> None:
    extractor = node("doc", "document-extractor", variable_selector=["http", "files"])
    outcome = await run_graph(
        [START, http_node(server + "/report.csv"), extractor, end_of("doc", "text")],
        chain("start", "http", "doc", "end"),
        resources=resources,
        workspace_id=workspace,
    )
    outputs = outcome.outputs("http")
    assert outputs["body"] == ""
    (file,) = outputs["files"]
    assert is_file(file)
    assert file["filename"] == "report.csv"
    assert file["extension"] == ".csv"
    assert file["mime_type"] == "text/csv"
    assert file["type"] == "document"
    assert file["transfer_method"] == "tool_file"
    assert file["size"] == 24
    assert outcome.state.outputs == {"text": ["city: Lyon; people: 520000"]}


# --- document extractor ------------------------------------------------------------------------


async def stored(
    services: Services, workspace: uuid.UUID, name: str, data: bytes
) -> dict[str, Any]:
    async with services.transaction() as db:
        row = await save_upload(
            db,
            services.storage,
            Uploader(workspace, "end_user", None),
            filename=name,
            mime_type=None,
            chunks=iter_bytes(data),
            max_bytes=10_000_000,
        )
    return file_value(row)


def extractor_node() -> dict[str, Any]:
    return node("doc", "document-extractor", variable_selector=["start", "file"])


async def test_extracts_a_file_and_an_array_of_files(
    services: Services, resources: Resources, workspace: uuid.UUID
) -> None:
    notes = await stored(services, workspace, "notes.md", b"# Title\n\nSome *text*.")
    paper = await stored(services, workspace, "paper.pdf", pdf([["First page"], ["Second page"]]))
    single = await run_one(resources, workspace, extractor_node(), {"file": notes})
    assert single.outputs("doc") == {"text": "# Title\n\nSome *text*."}
    several = await run_one(resources, workspace, extractor_node(), {"file": [notes, paper]})
    texts = several.outputs("doc")["text"]
    assert texts[0] == "# Title\n\nSome *text*."
    assert "First page" in texts[1]
    assert "Second page" in texts[1]
    empty = await run_one(resources, workspace, extractor_node(), {"file": []})
    assert empty.outputs("doc") == {"text": []}


async def test_unsupported_and_foreign_files_fail_clearly(
    services: Services, resources: Resources, workspace: uuid.UUID
) -> None:
    odd = await stored(services, workspace, "data.xyz", b"\x00\x01")
    outcome = await run_one(resources, workspace, extractor_node(), {"file": odd})
    error = failed_with(outcome)
    assert "'data.xyz'" in error
    assert ".xyz are not supported" in error
    other = await new_workspace(services)
    foreign = await stored(services, other, "notes.txt", b"secret")
    leaked = await run_one(resources, workspace, extractor_node(), {"file": foreign})
    assert "no longer exists" in failed_with(leaked)
    not_a_file = await run_one(resources, workspace, extractor_node(), {"file": "text"})
    assert "is string, not a file" in failed_with(not_a_file)


async def test_files_sent_as_binary_and_form_data(
    server: str, services: Services, resources: Resources, workspace: uuid.UUID
) -> None:
    notes = await stored(services, workspace, "notes.txt", b"file bytes")
    binary = {"type": "binary", "data": [{"type": "file", "file": ["start", "file"]}]}
    sent = await run_one(
        resources,
        workspace,
        http_node(server + "/echo", method="put", body=binary),
        {"file": notes},
    )
    assert json.loads(sent.outputs("http")["body"])["body"] == "file bytes"
    form = {
        "type": "form-data",
        "data": [
            {"type": "text", "key": "note", "value": "hi"},
            {"type": "file", "key": "doc", "file": ["start", "file"]},
        ],
    }
    posted = await run_one(
        resources, workspace, http_node(server + "/echo", method="post", body=form), {"file": notes}
    )
    echoed = json.loads(posted.outputs("http")["body"])
    assert 'name="note"\r\n\r\nhi\r\n' in echoed["body"]
    assert 'name="doc"; filename="notes.txt"' in echoed["body"]
    assert "file bytes" in echoed["body"]
    log = (posted.finished("http")[0].node.process_data or {})["request"]
    assert "doc=<file 'notes.txt', 10 bytes>" in log


async def test_remote_file_is_downloaded_through_the_guard(
    server: str, services: Services, resources: Resources, workspace: uuid.UUID
) -> None:
    remote = {
        "dify_model_identity": "__dify__file__",
        "transfer_method": "remote_url",
        "remote_url": server + "/report.csv",
        "filename": "report.csv",
        "extension": ".csv",
    }
    outcome = await run_one(resources, workspace, extractor_node(), {"file": remote})
    assert outcome.outputs("doc") == {"text": "city: Lyon; people: 520000"}
    closed = resources_of(services, ssrf_allowed_hosts="")
    refused = await run_one(closed, workspace, extractor_node(), {"file": remote})
    assert "Refused to connect to 127.0.0.1" in failed_with(refused)
