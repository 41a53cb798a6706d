"""Dify's official Python SDK (PyPI `dify-client`, unpatched) against a running `tusk api`:
chat blocking and streaming with conversation continuity, completion, a workflow run and its
stop, a file uploaded then used in a chat, conversations listed, renamed and deleted, message
history, feedback and parameters.

`dify-client` 0.1.10 (its newest release) has no method for workflow runs, stopping or deleting
a conversation: those calls go through the SDK's own request method, with its headers, as a
user of that SDK does.

Then the community SDK `dify-client-python` (1.0.3, unpatched), which parses every response and
event into pydantic models (usage with its prices, workflow and node data, uploads), so a key
missing or of the wrong type fails: chat streaming then blocking in one conversation, a
chatflow's events, completion, a workflow run, a chat and a workflow stopped, a file uploaded
then used, feedback, and its typed errors."""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import requests
from dify_client import ChatClient, CompletionClient, DifyClient

from tests.support.api import ADMIN
from tests.support.processes import eventually
from tests.support.tusk import db_env, tusk_process, wait_http
from tests.support.workflow import chain, node
from tusk.testing.openai_server import FakeOpenAI
from tusk.testing.processes import free_port

pytestmark = pytest.mark.acceptance
KEY = "sk-dify-sdk"
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat"}
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@dataclass(frozen=True)
class Tusk:
    url: str
    keys: dict[str, str]  # app mode -> app key
    fake: FakeOpenAI

    def client(self, kind: type[DifyClient], mode: str) -> Any:
        sdk = kind(self.keys[mode])
        sdk.base_url = f"{self.url}/v1"  # the SDK's one setting besides the key
        return sdk


def _console(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    assert client.post("/console/api/setup", json=ADMIN).status_code == 201
    token = client.post("/console/api/login", json=ADMIN).json()["data"]["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def _app(console: httpx.Client, mode: str, *, config: Any = None, graph: Any = None) -> str:
    app_id = console.post("/console/api/apps", json={"name": mode, "mode": mode}).json()["id"]
    base = f"/console/api/apps/{app_id}"
    if config is not None:
        assert console.post(f"{base}/model-config", json=config).status_code == 200
    if graph is not None:
        assert console.post(f"{base}/workflows/draft", json=graph).status_code == 200
        assert console.post(f"{base}/workflows/publish", json={}).status_code == 200
    token: str = console.post(f"{base}/api-keys").json()["token"]
    return token


def _chatflow() -> dict[str, Any]:
    vision = {"enabled": True, "configs": {"variable_selector": ["sys", "files"], "detail": "low"}}
    nodes = [
        node("start", "start", variables=[]),
        node("llm", "llm", model=GPT, vision=vision,
             prompt_template=[{"role": "user", "text": "{{#sys.query#}}"}]),
        node("answer", "answer", answer="{{#llm.text#}}"),
    ]  # fmt: skip
    features = {"file_upload": {"enabled": True, "allowed_file_types": ["image"]}}
    return {
        "graph": {"nodes": nodes, "edges": chain("start", "llm", "answer")},
        "features": features,
    }


def _workflow() -> dict[str, Any]:
    form = [{"variable": "topic", "label": "Topic", "type": "text-input", "required": True}]
    nodes = [
        node("start", "start", variables=form),
        node("llm", "llm", model=GPT,
             prompt_template=[{"role": "user", "text": "{{#start.topic#}}"}]),
        node("end", "end", outputs=[{"variable": "text", "value_selector": ["llm", "text"]}]),
    ]  # fmt: skip
    return {"graph": {"nodes": nodes, "edges": chain("start", "llm", "end")}, "features": {}}


@pytest.fixture(scope="module")
def tusk(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tusk]:
    with FakeOpenAI(api_key=KEY) as fake:
        env = db_env(database, OPENAI_API_KEY=KEY, OPENAI_API_BASE=fake.base_url)
        port = free_port()
        log = tmp_path_factory.mktemp("dify-sdk") / "api.log"
        with tusk_process(["api", "--port", str(port)], env, log) as api:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/health", process=api)  # /ready also wants a worker
            console = _console(url)
            simple = {"model": GPT, "prompt_type": "simple", "pre_prompt": "Be brief."}
            keys = {
                "chat": _app(console, "chat", config=simple),
                "completion": _app(console, "completion", config=simple),
                "advanced-chat": _app(console, "advanced-chat", graph=_chatflow()),
                "workflow": _app(console, "workflow", graph=_workflow()),
            }
            console.close()
            yield Tusk(url, keys, fake)
            api.stop_gracefully()


def ok(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def sse(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = (line.decode() for line in response.iter_lines() if line)
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]


def new_conversation(tusk: Tusk, chat: Any, query: str, user: str) -> Any:
    """The first turn of a conversation, once the model call that names it (made in the
    background: the SDK leaves `auto_generate_name` at Dify's default, true) is done too."""
    before = len(tusk.fake.requests)
    body = ok(chat.create_chat_message({}, query, user))
    eventually(lambda: len(tusk.fake.requests) >= before + 2)
    return body


def test_chat_blocking_and_streaming_in_one_conversation(tusk: Tusk) -> None:
    chat = tusk.client(ChatClient, "chat")
    tusk.fake.reply("Hello Ann")
    first = new_conversation(tusk, chat, "hi", "ann")
    assert (first["event"], first["mode"], first["answer"]) == ("message", "chat", "Hello Ann")
    conversation = first["conversation_id"]

    tusk.fake.reply("Still here", chunks=["Still", " here"])
    events = sse(chat.create_chat_message({}, "and now?", "ann", "streaming", conversation))
    assert {e["event"] for e in events[:-1]} == {"message"}
    assert events[-1]["event"] == "message_end"
    assert "".join(e["answer"] for e in events[:-1]) == "Still here"
    assert {e["conversation_id"] for e in events} == {conversation}
    assert events[-1]["metadata"]["usage"]["total_tokens"] > 0
    sent = [m["content"] for m in tusk.fake.requests[-1].json["messages"]]
    assert sent == ["Be brief.", "hi", "Hello Ann", "and now?"]

    history = ok(chat.get_conversation_messages("ann", conversation))
    assert [(m["query"], m["answer"]) for m in history["data"]] == [
        ("hi", "Hello Ann"),
        ("and now?", "Still here"),
    ]
    assert history["has_more"] is False
    first_only = ok(chat.get_conversation_messages("ann", conversation, limit=1))
    assert [m["query"] for m in first_only["data"]] == ["and now?"]
    assert first_only["has_more"] is True


def test_conversations_listed_renamed_and_deleted(tusk: Tusk) -> None:
    chat = tusk.client(ChatClient, "chat")
    made = []
    for query in ("one", "two"):
        tusk.fake.reply(f"re {query}")
        made.append(new_conversation(tusk, chat, query, "carl")["conversation_id"])
    listed = ok(chat.get_conversations("carl"))
    assert [c["id"] for c in listed["data"]] == made[::-1]  # newest first
    assert set(listed["data"][0]) == {
        "id", "name", "inputs", "status", "introduction", "created_at", "updated_at"
    }  # fmt: skip
    page = ok(chat.get_conversations("carl", limit=1))
    assert (len(page["data"]), page["has_more"]) == (1, True)

    renamed = ok(chat.rename_conversation(made[0], "Numbers", "carl"))
    assert (renamed["id"], renamed["name"]) == (made[0], "Numbers")
    assert ok(chat.get_conversations("dora"))["data"] == []  # another user sees none

    deleted = chat._send_request("DELETE", f"/conversations/{made[1]}", {"user": "carl"})
    assert deleted.status_code == 204
    assert [c["id"] for c in ok(chat.get_conversations("carl"))["data"]] == [made[0]]


def test_feedback_and_parameters(tusk: Tusk) -> None:
    chat = tusk.client(ChatClient, "chat")
    tusk.fake.reply("Rated")
    message = new_conversation(tusk, chat, "rate me", "erin")["message_id"]
    assert ok(chat.message_feedback(message, "like", "erin")) == {"result": "success"}
    history = ok(chat.get_conversation_messages("erin", ok(chat.get_conversations("erin"))
                                                ["data"][0]["id"]))  # fmt: skip
    assert history["data"][0]["feedback"] == {"rating": "like"}
    assert ok(chat.message_feedback(message, None, "erin")) == {"result": "success"}

    parameters = ok(chat.get_application_parameters("erin"))
    assert {"opening_statement", "user_input_form", "file_upload", "system_parameters"} <= set(
        parameters
    )
    flow = ok(tusk.client(ChatClient, "advanced-chat").get_application_parameters("erin"))
    assert flow["file_upload"]["enabled"] is True


def test_completion_blocking_and_streaming(tusk: Tusk) -> None:
    completion = tusk.client(CompletionClient, "completion")
    tusk.fake.reply("Done")
    body = ok(completion.create_completion_message({}, "blocking", "fay"))
    assert (body["mode"], body["answer"]) == ("completion", "Done")
    assert "conversation_id" not in body
    tusk.fake.reply("Streamed", chunks=["Stream", "ed"])
    events = sse(completion.create_completion_message({}, "streaming", "fay"))
    assert [e["event"] for e in events] == ["message", "message", "message_end"]


def test_file_uploaded_then_used_in_a_chat(tusk: Tusk) -> None:
    flow = tusk.client(ChatClient, "advanced-chat")
    uploaded = ok(flow.file_upload("gus", {"file": ("dot.png", PNG, "image/png")}), 201)
    assert (uploaded["name"], uploaded["extension"], uploaded["size"]) == (
        "dot.png",
        "png",
        len(PNG),
    )
    files = [{"type": "image", "transfer_method": "local_file", "upload_file_id": uploaded["id"]}]
    tusk.fake.reply("A dot")
    answer = ok(flow.create_chat_message({}, "what is it?", "gus", files=files))
    assert answer["answer"] == "A dot"
    content = tusk.fake.requests[-1].json["messages"][-1]["content"]
    images = [part for part in content if part["type"] == "image_url"]
    assert len(images) == 1
    assert images[0]["image_url"]["url"].startswith(("data:image/png;base64,", "http"))


def test_workflow_run_then_a_run_stopped(tusk: Tusk) -> None:
    sdk = tusk.client(DifyClient, "workflow")
    tusk.fake.reply("About owls")
    run = ok(sdk._send_request("POST", "/workflows/run",
                               {"inputs": {"topic": "owls"}, "user": "hal"}))  # fmt: skip
    assert run["data"]["status"] == "succeeded"
    assert run["data"]["outputs"] == {"text": "About owls"}
    assert ok(sdk._send_request("GET", f"/workflows/run/{run['workflow_run_id']}"))["status"] == (
        "succeeded"
    )

    tusk.fake.reply("too late", ttft=5.0)
    body = {"inputs": {"topic": "slow"}, "user": "hal", "response_mode": "streaming"}
    stream = sdk._send_request("POST", "/workflows/run", body, stream=True)
    lines = (line.decode() for line in stream.iter_lines() if line)
    names = []
    for line in lines:
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        names.append(event["event"])
        if event["event"] == "node_started" and event["data"]["node_id"] == "llm":
            stopped = sdk._send_request(
                "POST", f"/workflows/tasks/{event['task_id']}/stop", {"user": "hal"}
            )
            assert ok(stopped) == {"result": "success"}
        if event["event"] == "workflow_finished":
            assert event["data"]["status"] == "stopped"
            break
    assert names[0] == "workflow_started"
    assert names[-1] == "workflow_finished"


def test_errors_keep_difys_body(tusk: Tusk) -> None:
    chat = tusk.client(ChatClient, "chat")
    missing = chat.create_chat_message({}, "hi", "")
    assert missing.status_code == 400
    assert missing.json() == {
        "code": "invalid_param", "message": "Arg user must be provided.", "params": "user",
        "status": 400,
    }  # fmt: skip
    wrong = chat._send_request("GET", f"/messages?conversation_id={uuid.uuid4()}&user=ann")
    assert wrong.status_code == 404
    bad_key = ChatClient("app-not-a-key")
    bad_key.base_url = f"{tusk.url}/v1"
    assert bad_key.get_application_parameters("x").status_code == 401


# --- the community SDK `dify-client-python`, whose responses are typed (pydantic) --------------

COMMUNITY_SDK = Path(sys.prefix) / "community-sdk"  # where `make install` puts it


def _sdk_modules() -> list[str]:
    return [name for name in sys.modules if name.split(".")[0] == "dify_client"]


@pytest.fixture(scope="module")
def community() -> ModuleType:
    """The community SDK, unpatched. Its package has the official SDK's name (`dify_client`), so
    it is installed in a folder of its own and imported under that name for the import only."""
    assert (COMMUNITY_SDK / "dify_client").is_dir(), f"{COMMUNITY_SDK} is missing: make install"
    official = {name: sys.modules.pop(name) for name in _sdk_modules()}
    sys.path.insert(0, str(COMMUNITY_SDK))
    try:
        return importlib.import_module("dify_client")
    finally:
        sys.path.remove(str(COMMUNITY_SDK))
        for name in _sdk_modules():
            del sys.modules[name]
        sys.modules.update(official)


def typed_client(tusk: Tusk, community: ModuleType, mode: str) -> Any:
    return community.Client(api_key=tusk.keys[mode], api_base=f"{tusk.url}/v1")


WORKFLOW_DATA = {
    "workflow_started": "WorkflowStartedData",
    "node_started": "NodeStartedData",
    "node_finished": "NodeFinishedData",
    "workflow_finished": "WorkflowFinishedData",
}


def workflow_data(models: ModuleType, event: Any) -> Any:
    """A workflow event's `data` as the SDK's model for its event. The SDK's union of data models
    leaves as a dict the data with a `status` (pydantic's smart union takes the dict, which
    matches without converting the status to an enum), so it is validated here."""
    model = getattr(models, WORKFLOW_DATA[event.event.value])
    return event.data if isinstance(event.data, model) else model.model_validate(event.data)


def test_community_sdk_chat_streaming_then_blocking(tusk: Tusk, community: ModuleType) -> None:
    models = community.models
    chat = typed_client(tusk, community, "chat")
    tusk.fake.reply("Hello Ivy", chunks=["Hello", " Ivy"])
    request = models.ChatRequest(
        query="hi", user="ivy", response_mode="streaming", auto_generate_name=False
    )
    events = list(chat.chat_messages(request))
    assert [type(e) for e in events] == [
        models.MessageStreamResponse,
        models.MessageStreamResponse,
        models.MessageEndStreamResponse,
    ]
    assert "".join(e.answer for e in events[:-1]) == "Hello Ivy"
    usage = events[-1].metadata.usage  # every price and latency key Dify sends, typed
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    assert (usage.currency, usage.latency > 0) == ("USD", True)

    tusk.fake.reply("Again")
    conversation = events[0].conversation_id
    request = models.ChatRequest(
        query="again?", user="ivy", response_mode="blocking", conversation_id=conversation
    )
    second = chat.chat_messages(request)
    assert (type(second), second.mode, second.answer) == (models.ChatResponse, "chat", "Again")
    sent = [m["content"] for m in tusk.fake.requests[-1].json["messages"]]
    assert sent == ["Be brief.", "hi", "Hello Ivy", "again?"]


def test_community_sdk_chatflow_events_typed(tusk: Tusk, community: ModuleType) -> None:
    models = community.models
    flow = typed_client(tusk, community, "advanced-chat")
    tusk.fake.reply("Flowing", chunks=["Flow", "ing"])
    request = models.ChatRequest(
        query="go", user="ivy", response_mode="streaming", auto_generate_name=False
    )
    events = list(flow.chat_messages(request))
    names = [e.event.value for e in events]
    assert (names[0], names[-2:]) == ("workflow_started", ["message_end", "workflow_finished"])
    data = [workflow_data(models, e) for e in events if e.event.value in WORKFLOW_DATA]
    assert data[-1].status == "succeeded"
    assert [d.node_id for d in data[1:-1]] == ["start", "start", "llm", "llm", "answer", "answer"]
    answer = [e.answer for e in events if isinstance(e, models.MessageStreamResponse)]
    assert "".join(answer) == "Flowing"


def test_community_sdk_completion_and_workflow(tusk: Tusk, community: ModuleType) -> None:
    models = community.models
    completion = typed_client(tusk, community, "completion")
    tusk.fake.reply("Done")
    done = completion.completion_messages(
        models.CompletionRequest(response_mode="blocking", user="ivy")
    )
    assert (done.mode, done.answer) == ("completion", "Done")
    tusk.fake.reply("Streamed", chunks=["Stream", "ed"])
    streamed = completion.completion_messages(
        models.CompletionRequest(response_mode="streaming", user="ivy")
    )
    assert [e.event.value for e in streamed] == ["message", "message", "message_end"]

    workflow = typed_client(tusk, community, "workflow")
    tusk.fake.reply("About bats")
    run = workflow.run_workflows(
        models.WorkflowsRunRequest(inputs={"topic": "bats"}, response_mode="blocking", user="ivy")
    )
    assert (run.data.status, run.data.outputs) == ("succeeded", {"text": "About bats"})
    assert run.workflow_run_id == run.data.id


def test_community_sdk_stops_a_chat_and_a_workflow(tusk: Tusk, community: ModuleType) -> None:
    models = community.models
    chat = typed_client(tusk, community, "chat")
    tusk.fake.reply("one two three", chunks=["one", " two", " three"], delay=1.0)
    request = models.ChatRequest(
        query="count", user="ivy", response_mode="streaming", auto_generate_name=False
    )
    events = []
    for event in chat.chat_messages(request):
        events.append(event)
        if len(events) == 1:
            stopped = chat.stop_chat_messages(event.task_id, models.StopRequest(user="ivy"))
            assert stopped.result == "success"
    assert events[-1].event.value == "message_end"
    assert "".join(e.answer for e in events[:-1]) == "one"  # the stop cut the rest

    workflow = typed_client(tusk, community, "workflow")
    tusk.fake.reply("too late", ttft=3.0)
    request = models.WorkflowsRunRequest(
        inputs={"topic": "slow"}, response_mode="streaming", user="ivy"
    )
    finished = None
    for event in workflow.run_workflows(request):
        if event.event.value == "node_started" and workflow_data(models, event).node_id == "llm":
            stopped = workflow.stop_workflows(event.task_id, models.StopRequest(user="ivy"))
            assert stopped.result == "success"
        if event.event.value == "workflow_finished":
            finished = workflow_data(models, event)
    assert finished is not None
    assert finished.status == "stopped"


def test_community_sdk_files_feedback_and_errors(tusk: Tusk, community: ModuleType) -> None:
    models = community.models
    flow = typed_client(tusk, community, "advanced-chat")
    owner = models.UploadFileRequest(user="ivy")
    uploaded = flow.upload_files(("dot.png", PNG, "image/png"), owner)
    assert (uploaded.name, uploaded.size, uploaded.mime_type) == ("dot.png", len(PNG), "image/png")
    image = models.File(type="image", transfer_method="local_file", upload_file_id=uploaded.id)
    tusk.fake.reply("A dot")
    request = models.ChatRequest(
        query="what?", user="ivy", response_mode="blocking", files=[image],
        auto_generate_name=False,
    )  # fmt: skip
    answer = flow.chat_messages(request)
    assert answer.answer == "A dot"
    content = tusk.fake.requests[-1].json["messages"][-1]["content"]
    assert [part["type"] for part in content].count("image_url") == 1

    rating = models.FeedbackRequest(rating="like", user="ivy")
    assert flow.feedback_messages(answer.message_id, rating).result == "success"
    with pytest.raises(community.errors.DifyAPIError) as disabled:  # not enabled in this app
        flow.suggest_messages(answer.message_id, models.ChatSuggestRequest(user="ivy"))
    assert (disabled.value.status, disabled.value.code) == (400, "bad_request")

    nobody = models.ChatRequest(query="hi", user="", response_mode="blocking")
    with pytest.raises(community.errors.DifyInvalidParam) as invalid:
        typed_client(tusk, community, "chat").chat_messages(nobody)
    assert invalid.value.message == "Arg user must be provided."


def test_log_is_clean(tusk: Tusk, tmp_path: Path) -> None:
    """Nothing above made the server log a traceback (checked while it still runs)."""
    logs = list(Path(tmp_path).parent.glob("dify-sdk*/api.log"))
    assert logs
    assert all("Traceback" not in log.read_text(errors="replace") for log in logs)
