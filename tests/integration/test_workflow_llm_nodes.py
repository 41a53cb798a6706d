"""The model-calling workflow nodes (LLM, question classifier, parameter extractor, knowledge
retrieval) run by the engine against a real database, real datasets indexed by the knowledge
engine, and the fake OpenAI and Anthropic servers configured as a workspace's providers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.api import SECRET
from tests.support.knowledge import new_workspace, run_queued_jobs, services_on
from tests.support.workflow import Outcome, chain, edge, node
from tusk.db.models import Dataset
from tusk.models import credentials
from tusk.models.credentials import StoredProvider
from tusk.models.runtime import ModelRuntime
from tusk.models.types import Message
from tusk.rag import datasets, documents
from tusk.services import Services
from tusk.testing.anthropic_server import FakeAnthropic
from tusk.testing.llm_server import ToolCall
from tusk.testing.openai_server import FakeOpenAI
from tusk.workflow.context import Resources, RunContext
from tusk.workflow.events import Event, TextChunk
from tusk.workflow.executor import Executor
from tusk.workflow.plan import Mode, build_plan
from tusk.workflow.variables import VariablePool

KEY = "sk-workflow-nodes"
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat"}
CLAUDE = {"provider": "anthropic", "name": "claude-3-5-haiku-latest", "mode": "chat"}
TOPICS = {
    "bees": "Honey bees live in colonies with one queen. Worker bees gather nectar and pollen, "
    "and they tell each other where flowers are with a waggle dance.",
    "volcano": "A volcano erupts when magma rises through the crust. Lava flows and ash clouds "
    "are the main hazards near an active volcano.",
}


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def services(database: str) -> AsyncIterator[Services]:
    async with services_on(database, model_max_retries=0) as made:
        yield made


@pytest.fixture
def resources(services: Services) -> Resources:
    # No usage recorder: these runs have no app row for model_usage to point at.
    models = ModelRuntime(services.sessions, SECRET, services.models.config)
    return Resources(
        settings=services.settings,
        sessions=services.sessions,
        storage=services.storage,
        models=models,
        sandbox=services.sandbox,
    )


@pytest.fixture
async def workspace(services: Services, openai: FakeOpenAI, anthropic: FakeAnthropic) -> uuid.UUID:
    """A workspace whose OpenAI and Anthropic providers are the fake servers."""
    openai.clear()
    anthropic.clear()
    workspace_id = await new_workspace(services)
    async with services.transaction() as db:
        for name, fake in (("openai", openai), ("anthropic", anthropic)):
            stored = StoredProvider(name, name, {"api_key": KEY, "base_url": fake.base_url})
            await credentials.save(db, SECRET, workspace_id, stored)
    return workspace_id


class Chat:
    """A conversation so far, as a chatflow gives it to nodes with memory."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self.past = list(messages)
        self.windows: list[int | None] = []

    async def messages(self, window: int | None) -> Sequence[Message]:
        self.windows.append(window)
        return self.past[-window:] if window else self.past


async def run(
    resources: Resources,
    workspace: uuid.UUID,
    nodes: list[dict[str, Any]],
    edges: list[dict[str, Any]],
    inputs: dict[str, Any] | None = None,
    *,
    mode: Mode = "workflow",
    system: dict[str, Any] | None = None,
    chat: Chat | None = None,
) -> Outcome:
    """`run_graph`, with the conversation a chatflow would give."""
    plan = build_plan({"nodes": nodes, "edges": edges}, mode)
    context = RunContext(
        workspace_id=workspace,
        app_id=uuid.uuid4(),
        workflow_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        resources=resources,
        inputs=dict(inputs or {}),
        history=chat,
    )
    pool = VariablePool.for_run(system or {})
    events: list[Event] = []
    state = await Executor(plan, context, pool, events.append, inputs=inputs).run()
    return Outcome(state, events)


def start(*names: str) -> dict[str, Any]:
    return node("start", "start", variables=[{"variable": n, "type": "text-input"} for n in names])


def llm(node_id: str = "llm", **data: Any) -> dict[str, Any]:
    data.setdefault("model", GPT)
    data.setdefault("context", {"enabled": False})
    return node(node_id, "llm", **data)


def sent_messages(fake: FakeOpenAI, index: int = -1) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = fake.requests[index].json["messages"]
    return messages


# --- LLM ---------------------------------------------------------------------------------


async def test_llm_renders_its_prompt_and_streams_into_the_answer(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.reply("Bees dance.", chunks=["Bees", " dan", "ce."], usage=(40, 3))
    prompt = [
        {"role": "system", "text": "You answer questions about {{#start.topic#}}."},
        {"role": "user", "text": "{{#start.question#}}"},
    ]
    nodes = [
        start("topic", "question"),
        llm(prompt_template=prompt),
        node("answer", "answer", answer="A: {{#llm.text#}}!"),
    ]
    outcome = await run(
        resources,
        workspace,
        nodes,
        chain("start", "llm", "answer"),
        {"topic": "insects", "question": "How do bees talk?"},
        mode="advanced-chat",
    )
    assert outcome.state.status == "succeeded", outcome.state.error
    assert sent_messages(openai) == [
        {"role": "system", "content": "You answer questions about insects."},
        {"role": "user", "content": "How do bees talk?"},
    ]
    assert openai.requests[-1].json["model"] == "gpt-4o-mini"
    chunks = [e.text for e in outcome.events if isinstance(e, TextChunk)]
    assert chunks == ["A: ", "Bees", " dan", "ce.", "!"]
    outputs = outcome.outputs("llm")
    assert outputs["text"] == "Bees dance."
    assert outputs["finish_reason"] == "stop"
    usage = outputs["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        40,
        3,
        43,
    )
    # gpt-4o-mini lists at 0.15 and 0.60 USD per million tokens.
    assert Decimal(usage["total_price"]) == Decimal("0.0000078")
    assert usage["currency"] == "USD"
    assert usage["latency"] >= 0
    finished = outcome.finished("llm")[-1].node
    assert finished.metadata["total_tokens"] == 43
    assert finished.metadata["currency"] == "USD"
    assert outcome.state.total_tokens == 43
    assert finished.process_data is not None
    assert finished.process_data["model_provider"] == "langgenius/openai/openai"
    assert [p["text"] for p in finished.process_data["prompts"]] == [
        "You answer questions about insects.",
        "How do bees talk?",
    ]


async def test_llm_inserts_the_context_renders_jinja2_and_remembers_the_chat(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    docs = [
        {"content": "Bees dance.", "title": "bees", "metadata": {"_source": "knowledge"}},
        {"content": "Lava flows.", "title": "volcano", "metadata": {"_source": "knowledge"}},
    ]
    prompt = [
        {
            "role": "system",
            "text": "",
            "edition_type": "jinja2",
            "jinja2_text": "Facts:{% for d in docs %} [{{ d.title|upper }}]{% endfor %}",
        },
        {"role": "user", "text": "Context:\n{{#context#}}\nName: {{#start.name#}}"},
    ]
    chat = Chat([Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "More")])
    nodes = [
        start("name"),
        llm(
            prompt_template=prompt,
            prompt_config={
                "jinja2_variables": [{"variable": "docs", "value_selector": ["start", "docs"]}]
            },
            context={"enabled": True, "variable_selector": ["start", "docs"]},
            memory={
                "window": {"enabled": True, "size": 2},
                "query_prompt_template": "Q: {{#sys.query#}}",
            },
        ),
        node("answer", "answer", answer="{{#llm.text#}}"),
    ]
    outcome = await run(
        resources,
        workspace,
        nodes,
        chain("start", "llm", "answer"),
        {"name": "Ada {{#start.docs#}}", "docs": docs},
        mode="advanced-chat",
        system={"query": "Why?"},
        chat=chat,
    )
    assert outcome.state.status == "succeeded", outcome.state.error
    assert sent_messages(openai) == [
        {"role": "system", "content": "Facts: [BEES] [VOLCANO]"},
        {
            "role": "user",
            "content": "Context:\nBees dance.\nLava flows.\nName: Ada {{#start.docs#}}",
        },
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "More"},
        {"role": "user", "content": "Q: Why?"},
    ]
    assert chat.windows == [2]
    assert outcome.outputs("llm")["text"] == "Echo: Q: Why?"


async def test_a_jinja2_prompt_cannot_reach_python_internals(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    prompt = [
        {"role": "user", "edition_type": "jinja2", "jinja2_text": "{{ ''.__class__.__mro__ }}"}
    ]
    nodes = [start(), llm(prompt_template=prompt), node("end", "end", outputs=[])]
    outcome = await run(resources, workspace, nodes, chain("start", "llm", "end"))
    assert outcome.state.status == "failed"
    assert "Jinja2 prompt cannot be rendered" in (outcome.state.error or "")
    assert openai.requests == []


@pytest.mark.parametrize("reasoning_format", ["separated", "tagged"])
async def test_llm_splits_out_reasoning(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI, reasoning_format: str
) -> None:
    answer = "<think>The user wants a number.</think>\n\nIt is 42."
    openai.reply(
        answer, chunks=["<thi", "nk>The user", " wants a number.</th", "ink>\n\nIt", " is 42."]
    )
    nodes = [
        start(),
        llm(
            prompt_template=[{"role": "user", "text": "Number?"}], reasoning_format=reasoning_format
        ),
        node("answer", "answer", answer="{{#llm.text#}}"),
    ]
    outcome = await run(
        resources, workspace, nodes, chain("start", "llm", "answer"), mode="advanced-chat"
    )
    outputs = outcome.outputs("llm")
    assert outputs["reasoning_content"] == "The user wants a number."
    if reasoning_format == "separated":
        assert outputs["text"] == "It is 42."
        assert outcome.streamed == "It is 42."
    else:
        assert outputs["text"] == answer
        assert outcome.streamed == answer


async def test_llm_structured_output(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    openai.reply('```json\n{"city": "Paris"}\n```')
    nodes = [
        start(),
        llm(
            prompt_template=[
                {"role": "system", "text": "Be brief."},
                {"role": "user", "text": "Capital of France?"},
            ],
            structured_output_enabled=True,
            structured_output={"schema": schema},
        ),
        node(
            "end",
            "end",
            outputs=[{"variable": "city", "value_selector": ["llm", "structured_output", "city"]}],
        ),
    ]
    outcome = await run(resources, workspace, nodes, chain("start", "llm", "end"))
    assert outcome.state.status == "succeeded", outcome.state.error
    assert outcome.state.outputs == {"city": "Paris"}
    system = sent_messages(openai)[0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.\n\n")
    assert '"required": ["city"]' in system["content"]

    openai.reply("Paris, of course.")
    failed = await run(resources, workspace, nodes, chain("start", "llm", "end"))
    assert failed.state.status == "failed"
    assert "not the JSON object" in (failed.state.error or "")


async def test_llm_calls_anthropic_models(
    resources: Resources, workspace: uuid.UUID, anthropic: FakeAnthropic
) -> None:
    anthropic.reply("Bonjour", usage=(5, 1))
    nodes = [
        start(),
        llm(
            model=CLAUDE,
            prompt_template=[
                {"role": "system", "text": "French."},
                {"role": "user", "text": "Hello"},
            ],
        ),
        node("end", "end", outputs=[{"variable": "text", "value_selector": ["llm", "text"]}]),
    ]
    outcome = await run(resources, workspace, nodes, chain("start", "llm", "end"))
    assert outcome.state.outputs == {"text": "Bonjour"}
    body = anthropic.requests[-1].json
    assert body["model"] == "claude-3-5-haiku-latest"
    assert body["system"] in ("French.", [{"type": "text", "text": "French."}])
    assert outcome.outputs("llm")["usage"]["total_tokens"] == 6


async def test_a_model_whose_provider_is_not_configured_fails_with_what_to_do(
    resources: Resources, workspace: uuid.UUID
) -> None:
    model = {"provider": "langgenius/mistralai/mistralai", "name": "mistral-large", "mode": "chat"}
    nodes = [
        start(),
        llm(model=model, prompt_template=[{"role": "user", "text": "Hi"}]),
        node("end", "end"),
    ]
    outcome = await run(resources, workspace, nodes, chain("start", "llm", "end"))
    assert outcome.state.status == "failed"
    error = outcome.state.error or ""
    assert "langgenius/mistralai/mistralai/mistral-large" in error
    assert "Configure the mistralai provider" in error


async def test_a_provider_error_fails_the_node_or_takes_its_fail_branch(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    prompt = [{"role": "user", "text": "Hi"}]
    openai.fail(400, "This model does not like you")
    nodes = [start(), llm(prompt_template=prompt), node("end", "end")]
    outcome = await run(resources, workspace, nodes, chain("start", "llm", "end"))
    assert outcome.state.status == "failed"
    assert "This model does not like you" in (outcome.state.error or "")
    assert outcome.finished("llm")[-1].node.status == "failed"

    openai.fail(400, "Still no")
    nodes = [
        start(),
        llm(prompt_template=prompt, error_strategy="fail-branch"),
        node("ok", "answer", answer="fine: {{#llm.text#}}"),
        node("sorry", "answer", answer="sorry: {{#llm.error_message#}}"),
    ]
    edges = [edge("start", "llm"), edge("llm", "ok"), edge("llm", "sorry", "fail-branch")]
    outcome = await run(resources, workspace, nodes, edges, mode="advanced-chat")
    assert outcome.state.status == "partial-succeeded", outcome.state.error
    assert outcome.finished("llm")[-1].node.status == "exception"
    assert "Still no" in outcome.outputs("sorry")["answer"]
    assert outcome.outputs("sorry")["answer"].startswith("sorry: ")
    assert not outcome.finished("ok")


# --- question classifier ------------------------------------------------------------------

CLASSES = [{"id": "1", "name": "Insects"}, {"id": "2", "name": "Volcanoes"}]


def classifier_graph(**data: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = [
        start("question"),
        node(
            "sort",
            "question-classifier",
            model=GPT,
            query_variable_selector=["start", "question"],
            classes=CLASSES,
            **data,
        ),
        node(
            "insects",
            "end",
            outputs=[{"variable": "went", "value_selector": ["sort", "class_name"]}],
        ),
        node(
            "volcanoes",
            "end",
            outputs=[{"variable": "went", "value_selector": ["sort", "class_id"]}],
        ),
    ]
    edges = [edge("start", "sort"), edge("sort", "insects", "1"), edge("sort", "volcanoes", "2")]
    return nodes, edges


async def test_the_classifier_takes_the_branch_of_the_chosen_class(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.reply('Sure! {"category_id": "2", "category_name": "Volcanoes"}', usage=(80, 12))
    nodes, edges = classifier_graph(instruction="Topic of {{#start.question#}}")
    outcome = await run(resources, workspace, nodes, edges, {"question": "Why does lava flow?"})
    assert outcome.state.status == "succeeded", outcome.state.error
    assert outcome.outputs("sort")["class_name"] == "Volcanoes"
    assert outcome.outputs("sort")["class_id"] == "2"
    assert outcome.outputs("sort")["usage"]["total_tokens"] == 92
    assert outcome.state.outputs == {"went": "2"}
    assert not outcome.finished("insects")
    assert outcome.state.total_tokens == 92
    system, user = sent_messages(openai)
    assert "Topic of Why does lava flow?" in system["content"]
    assert '"category_name": "Insects"' in user["content"]
    assert user["content"].endswith("Text: Why does lava flow?")


async def test_the_classifier_falls_back_to_the_first_class(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.reply("I cannot decide.")
    nodes, edges = classifier_graph()
    outcome = await run(resources, workspace, nodes, edges, {"question": "Hmm"})
    assert outcome.state.outputs == {"went": "Insects"}
    assert not outcome.finished("volcanoes")

    openai.reply('{"category_name": "volcanoes"}')  # a name alone is enough
    outcome = await run(resources, workspace, nodes, edges, {"question": "Hmm"})
    assert outcome.state.outputs == {"went": "2"}


# --- parameter extractor ------------------------------------------------------------------

PARAMETERS = [
    {"name": "city", "type": "string", "description": "The city", "required": True},
    {"name": "days", "type": "number", "description": "How many days", "required": True},
    {"name": "pets", "type": "bool", "description": "Pets along?", "required": False},
    {"name": "tags", "type": "array[string]", "description": "Tags", "required": False},
    {"name": "size", "type": "select", "options": ["S", "M"], "description": "", "required": False},
]


def extractor(mode: str) -> list[dict[str, Any]]:
    return [
        start("text"),
        node(
            "extract",
            "parameter-extractor",
            model=GPT,
            query=["start", "text"],
            parameters=PARAMETERS,
            instruction="Trips only.",
            reasoning_mode=mode,
        ),
        node("end", "end", outputs=[{"variable": "days", "value_selector": ["extract", "days"]}]),
    ]


async def test_the_extractor_fills_parameters_from_a_function_call(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    arguments = {"city": "Paris", "days": "3", "pets": True, "tags": ["art", 1], "size": "M"}
    openai.reply_tool_calls([ToolCall("extract_parameters", arguments)])
    outcome = await run(
        resources,
        workspace,
        extractor("function_call"),
        chain("start", "extract", "end"),
        {"text": "Three days in Paris with the dog"},
    )
    assert outcome.state.status == "succeeded", outcome.state.error
    outputs = outcome.outputs("extract")
    assert {k: v for k, v in outputs.items() if k != "__usage"} == {
        "city": "Paris",
        "days": 3,
        "pets": True,
        "tags": ["art", "1"],
        "size": "M",
        "__is_success": 1,
        "__reason": None,
    }
    assert outputs["__usage"]["total_tokens"] > 0
    assert outcome.state.outputs == {"days": 3}
    tool = openai.requests[-1].json["tools"][0]["function"]
    assert tool["name"] == "extract_parameters"
    assert tool["parameters"]["required"] == ["city", "days"]
    assert tool["parameters"]["properties"]["size"] == {
        "description": "",
        "type": "string",
        "enum": ["S", "M"],
    }
    assert tool["parameters"]["properties"]["tags"]["items"] == {"type": "string"}


async def test_the_extractor_reports_a_missing_required_parameter(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.reply('Here you are: {"city": "Oslo", "size": "XL"}')
    outcome = await run(
        resources,
        workspace,
        extractor("prompt"),
        chain("start", "extract", "end"),
        {"text": "Oslo, please"},
    )
    assert outcome.state.status == "succeeded", outcome.state.error
    outputs = outcome.outputs("extract")
    assert outputs["__is_success"] == 0
    assert outputs["__reason"] == "parameter days is required"
    assert (
        outputs["city"],
        outputs["days"],
        outputs["pets"],
        outputs["tags"],
        outputs["size"],
    ) == ("Oslo", 0, False, [], "")
    body = openai.requests[-1].json
    assert "tools" not in body
    assert "Oslo, please" in body["messages"][-1]["content"]
    assert "Trips only." in body["messages"][0]["content"]

    openai.reply("No idea.")
    outcome = await run(
        resources, workspace, extractor("prompt"), chain("start", "extract", "end"), {"text": "?"}
    )
    assert outcome.outputs("extract")["__is_success"] == 0
    assert "no JSON object" in outcome.outputs("extract")["__reason"]


# --- knowledge retrieval ------------------------------------------------------------------


async def topics_dataset(services: Services, workspace: uuid.UUID, name: str = "kb") -> Dataset:
    async with services.transaction() as db:
        dataset = await datasets.create_dataset(
            db,
            services.models,
            services.queue,
            workspace,
            datasets.DatasetInput(name=name, indexing_technique="economy"),
            None,
        )
    for title, body in TOPICS.items():
        async with services.transaction() as db:
            await documents.add_document(
                db,
                services.storage,
                services.queue,
                dataset,
                documents.DocumentInput(name=title),
                documents.text_source(title, body),
                max_bytes=1_000_000,
                created_by=None,
            )
    await run_queued_jobs(services)
    return dataset


def retrieval(dataset_ids: list[str], **data: Any) -> dict[str, Any]:
    data.setdefault("retrieval_mode", "multiple")
    data.setdefault("multiple_retrieval_config", {"top_k": 2, "reranking_enable": False})
    return node(
        "kb",
        "knowledge-retrieval",
        query_variable_selector=["start", "question"],
        dataset_ids=dataset_ids,
        **data,
    )


async def test_retrieval_gives_context_items_that_an_llm_reads(
    services: Services, resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    dataset = await topics_dataset(services, workspace)
    prompt = [
        {"role": "system", "text": "Use: {{#context#}}"},
        {"role": "user", "text": "{{#start.question#}}"},
    ]
    nodes = [
        start("question"),
        retrieval([str(dataset.id)]),
        llm(
            prompt_template=prompt, context={"enabled": True, "variable_selector": ["kb", "result"]}
        ),
        node("end", "end", outputs=[{"variable": "result", "value_selector": ["kb", "result"]}]),
    ]
    outcome = await run(
        resources,
        workspace,
        nodes,
        chain("start", "kb", "llm", "end"),
        {"question": "waggle dance of bees"},
    )
    assert outcome.state.status == "succeeded", outcome.state.error
    result = outcome.state.outputs["result"]
    first = result[0]
    assert first["title"] == "bees"
    assert first["content"] == TOPICS["bees"]
    metadata = first["metadata"]
    assert metadata["_source"] == "knowledge"
    assert metadata["position"] == 1
    assert metadata["dataset_id"] == str(dataset.id)
    assert metadata["dataset_name"] == "kb"
    assert metadata["document_name"] == "bees"
    assert metadata["retriever_from"] == "workflow"
    assert 0 < metadata["score"] <= 1
    async with services.engine.connect() as conn:
        owner = await conn.execute(
            text("SELECT document_id FROM document_segments WHERE id = :id"),
            {"id": uuid.UUID(metadata["segment_id"])},
        )
        assert str(owner.scalar_one()) == metadata["document_id"]
    assert [item["metadata"]["position"] for item in result] == list(range(1, len(result) + 1))
    assert sent_messages(openai)[0]["content"].startswith(f"Use: {TOPICS['bees']}")


async def test_single_mode_and_metadata_filters(
    services: Services, resources: Resources, workspace: uuid.UUID
) -> None:
    first = await topics_dataset(services, workspace, "first")
    second = await topics_dataset(services, workspace, "second")
    ids = [str(first.id), str(second.id)]
    nodes = [
        start("question"),
        retrieval(ids, retrieval_mode="single"),
        node("end", "end", outputs=[{"variable": "result", "value_selector": ["kb", "result"]}]),
    ]
    outcome = await run(
        resources, workspace, nodes, chain("start", "kb", "end"), {"question": "lava and ash"}
    )
    assert outcome.state.status == "succeeded", outcome.state.error
    result = outcome.state.outputs["result"]
    assert result[0]["title"] == "volcano"
    assert len({item["metadata"]["dataset_id"] for item in result}) == 1

    conditions = {
        "logical_operator": "and",
        "conditions": [
            {"name": "author", "comparison_operator": "is", "value": "{{#start.question#}}"}
        ],
    }
    nodes[1] = retrieval(
        ids, metadata_filtering_mode="manual", metadata_filtering_conditions=conditions
    )
    outcome = await run(
        resources, workspace, nodes, chain("start", "kb", "end"), {"question": "lava and ash"}
    )
    assert outcome.state.status == "succeeded", outcome.state.error
    assert outcome.state.outputs["result"] == []  # no document has that author


async def test_retrieval_refuses_a_dataset_of_another_workspace(
    services: Services, resources: Resources, workspace: uuid.UUID
) -> None:
    other = await topics_dataset(services, await new_workspace(services))
    nodes = [
        start("question"),
        retrieval([str(other.id)]),
        node("end", "end", outputs=[{"variable": "result", "value_selector": ["kb", "result"]}]),
    ]
    outcome = await run(
        resources, workspace, nodes, chain("start", "kb", "end"), {"question": "bees"}
    )
    assert outcome.state.status == "failed"
    assert f"unknown dataset ids: {other.id}" in (outcome.state.error or "")


async def test_llm_vision_sends_image_files_as_image_parts(
    resources: Resources, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    photo = {
        "dify_model_identity": "__dify__file__",
        "type": "image",
        "filename": "cat.png",
        "transfer_method": "remote_url",
        "remote_url": "https://example.com/cat.png",
    }
    nodes = [
        start(),
        llm(
            prompt_template=[{"role": "user", "text": "What is in the picture?"}],
            vision={
                "enabled": True,
                "configs": {"variable_selector": ["start", "photos"], "detail": "low"},
            },
        ),
        node("end", "end"),
    ]
    outcome = await run(
        resources, workspace, nodes, chain("start", "llm", "end"), {"photos": [photo]}
    )
    assert outcome.state.status == "succeeded", outcome.state.error
    content = sent_messages(openai)[-1]["content"]
    assert {"type": "text", "text": "What is in the picture?"} in content
    images = [part for part in content if part["type"] == "image_url"]
    assert images == [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
    ]
    prompts = outcome.finished("llm")[-1].node.process_data["prompts"]  # type: ignore[index]
    assert prompts[-1]["files"] == [
        {"type": "image", "data": "https://example.com/cat.png", "detail": "low"}
    ]
