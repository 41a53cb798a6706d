"""Dify's app DSL: reading, version rules, errors, export and round trips, provider ids, and the
corpus report. Runs over the shared corpus of real DSL files when it is present, and always over
the fixtures in tests/dsl/."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from tusk.workflow import corpus
from tusk.workflow.dsl import (
    CURRENT_DSL_VERSION,
    DslError,
    ImportedApp,
    read_dsl,
    version_status,
)
from tusk.workflow.dsl_export import write_dsl
from tusk.workflow.providers import (
    full_provider_id,
    graph_model_refs,
    read_dependency,
    serving_provider,
    tusk_provider,
)

FIXTURES = Path(__file__).resolve().parent.parent / "dsl"
CORPUS = Path(__file__).parents[3] / "shared" / "dify-dsl"  # beside the repository, if there
MODES = {"workflow", "advanced-chat", "chat", "agent-chat", "completion"}


def dsl_files() -> list[Path]:
    found = corpus.dsl_files(FIXTURES)
    if CORPUS.is_dir():
        found += corpus.dsl_files(CORPUS)
    return found


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def export(app: ImportedApp, *, include_secret: bool = False) -> str:
    return write_dsl(
        app.app,
        app.workflow,
        model_config=app.model_config,
        dependencies=app.dependencies,
        include_secret=include_secret,
    )


MINIMAL = """\
version: 0.6.0
kind: app
app: {name: echo, mode: workflow}
workflow:
  graph:
    nodes:
    - id: start
      data: {type: start, title: Start, variables: []}
    - id: end
      data: {type: end, title: End, outputs: []}
    edges:
    - {id: e1, source: start, target: end}
"""


# --- every real file -------------------------------------------------------------------------


def test_the_fixtures_are_there() -> None:
    assert len(corpus.dsl_files(FIXTURES)) >= 5


@pytest.mark.parametrize("path", dsl_files(), ids=lambda p: p.name)
def test_every_file_reads_and_round_trips(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    app = read_dsl(text)
    assert app.mode in MODES
    assert app.status in {"completed", "completed-with-warnings", "pending"}
    assert (app.workflow is None) == (app.mode not in {"workflow", "advanced-chat"})
    assert corpus.round_trip_differences(text) == []
    once = export(app, include_secret=True)
    assert export(read_dsl(once), include_secret=True) == once


@pytest.mark.parametrize("path", dsl_files(), ids=lambda p: p.name)
def test_every_unrunnable_node_is_named_with_its_title(path: Path) -> None:
    app = read_dsl(path.read_text(encoding="utf-8"))
    if app.workflow is None:
        return
    nodes = {n["id"]: n["data"] for n in app.workflow.graph["nodes"] if n["data"].get("type")}
    for issue in app.unsupported:
        assert nodes[issue.node_id]["type"] == issue.type
        assert issue.title == (nodes[issue.node_id].get("title") or issue.type)
        assert issue.reason
        assert f"node {issue.node_id} ({issue.title}" in "\n".join(app.warnings)
    for issue in app.unsupported:
        if issue.type == "tool":  # a tool node is reported for its provider, named
            provider = str(nodes[issue.node_id].get("provider_id") or "")
            assert provider in issue.reason or "provider" in issue.reason


# --- a workflow with a tool node, secrets and plugins ------------------------------------------


def test_a_tool_node_is_reported_and_the_import_succeeds() -> None:
    app = read_dsl(fixture("tusk-workflow-tool-secrets.yml"))
    assert app.status == "completed"
    assert app.version_warning is None
    tool = next(i for i in app.unsupported if i.type == "tool")
    assert (tool.node_id, tool.title) == ("search", "Web search")
    assert "'langgenius/tavily/tavily' (tool 'tavily_search') has no Tusk equivalent" in tool.reason
    assert tool.as_json()["node_id"] == "search"
    assert "node search (Web search, tool) cannot run: the built-in tool provider" in "\n".join(
        app.warnings
    )


def test_app_fields_are_read() -> None:
    app = read_dsl(fixture("tusk-workflow-tool-secrets.yml"))
    assert app.app.name == "search-and-answer"
    assert app.app.icon == "🔎"
    assert app.app.icon_background == "#E0F2FE"
    assert app.app.description == "Searches, then answers"
    assert app.app.use_icon_as_answer_icon is False
    assert read_dsl(fixture("tusk-chat.yml")).app.use_icon_as_answer_icon is True


def test_finishing_in_the_background_is_written_only_when_set() -> None:
    app = read_dsl(fixture("tusk-chat.yml"))
    assert app.app.finish_in_background is False
    assert "finish_in_background" not in yaml.safe_load(export(app))["app"]
    background = dataclasses.replace(
        app, app=dataclasses.replace(app.app, finish_in_background=True)
    )
    text = export(background)
    assert yaml.safe_load(text)["app"]["finish_in_background"] is True
    assert read_dsl(text).app.finish_in_background is True


def test_secrets_are_read_and_blanked_on_export() -> None:
    app = read_dsl(fixture("tusk-workflow-tool-secrets.yml"))
    assert app.workflow is not None
    secret = app.workflow.environment_variables[0]
    assert (secret["value_type"], secret["value"]) == ("secret", "sk-test-not-a-real-key")
    assert secret["selector"] == ["env", "search_key"]
    exported = yaml.safe_load(export(app))["workflow"]["environment_variables"]
    assert [v["value"] for v in exported] == ["", 3]
    kept = yaml.safe_load(export(app, include_secret=True))["workflow"]["environment_variables"]
    assert kept[0]["value"] == "sk-test-not-a-real-key"
    assert "sk-test-not-a-real-key" not in export(app)


def test_tool_credentials_leave_only_with_secrets() -> None:
    app = read_dsl(fixture("tusk-workflow-tool-secrets.yml"))

    def tool_data(text: str) -> dict[str, object]:
        nodes = yaml.safe_load(text)["workflow"]["graph"]["nodes"]
        data: dict[str, object] = next(n["data"] for n in nodes if n["id"] == "search")
        return data

    assert "credential_id" not in tool_data(export(app))
    assert tool_data(export(app, include_secret=True))["credential_id"] == (
        "2c3f1d52-4a1b-4e0e-8a57-0b1e2f0c1a99"
    )


def test_encrypted_dataset_ids_are_dropped_and_plain_ones_kept() -> None:
    app = read_dsl(fixture("tusk-workflow-tool-secrets.yml"))
    assert app.workflow is not None
    kb = next(n for n in app.workflow.graph["nodes"] if n["id"] == "kb")
    assert kb["data"]["dataset_ids"] == ["8e6c1a64-9f0b-4c8e-a7b2-2e3c4d5f6a7b"]
    assert any("node kb (Knowledge): 1 knowledge base id(s) dropped" in w for w in app.warnings)


def test_plugins_are_listed_and_only_unknown_ones_warned_about() -> None:
    app = read_dsl(fixture("tusk-workflow-tool-secrets.yml"))
    assert [(p.plugin_id, p.version, p.provider) for p in app.plugins] == [
        ("langgenius/openai", "0.2.8", "openai"),
        ("langgenius/tavily", "0.1.4", None),
    ]
    text = "\n".join(app.warnings)
    assert "Dify plugin langgenius/tavily 0.1.4" in text
    assert "langgenius/openai" not in text


def test_export_has_dify_layout() -> None:
    app = read_dsl(fixture("tusk-workflow-tool-secrets.yml"))
    text = export(app)
    data = yaml.safe_load(text)
    assert [line for line in text.splitlines() if not line.startswith((" ", "-"))] == [
        "app:",
        "dependencies:",
        "kind: app",
        f"version: {CURRENT_DSL_VERSION}",
        "workflow:",
    ]
    assert list(data["app"]) == sorted(data["app"])
    assert data["app"]["mode"] == "workflow"
    assert list(data["workflow"]) == [
        "conversation_variables",
        "environment_variables",
        "features",
        "graph",
        "rag_pipeline_variables",
    ]
    assert (
        data["dependencies"]
        == yaml.safe_load(fixture("tusk-workflow-tool-secrets.yml"))["dependencies"]
    )


def test_rag_pipeline_variables_are_kept() -> None:
    text = MINIMAL + "  rag_pipeline_variables:\n  - {variable: x, type: text-input}\n"
    app = read_dsl(text)
    exported = yaml.safe_load(export(app))["workflow"]["rag_pipeline_variables"]
    assert exported == [{"variable": "x", "type": "text-input"}]


def test_a_chat_app_keeps_its_model_config() -> None:
    app = read_dsl(fixture("tusk-chat.yml"))
    assert app.workflow is None
    assert app.model_config is not None
    assert app.model_config["pre_prompt"] == "You are brief."
    exported = yaml.safe_load(export(app))
    assert "workflow" not in exported
    assert exported["model_config"] == app.model_config


# --- versions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "status"),
    [
        ("0.6.0", "completed"),
        ("0.6", "completed"),
        ("0.6.0rc1", "completed"),
        ("0.6.1", "pending"),
        ("0.6.0.1", "pending"),
        ("0.6.0.post1", "pending"),
        ("0.7.0", "pending"),
        ("1.0.0", "pending"),
        ("0.5.9", "completed-with-warnings"),
        ("0.1.0", "completed-with-warnings"),
    ],
)
def test_version_status_follows_dify(version: str, status: str) -> None:
    assert version_status(version) == status


def test_an_older_major_version_needs_confirmation() -> None:
    assert version_status("0.9.0", current="1.2.0") == "pending"
    assert version_status("1.1.0", current="1.2.0") == "completed-with-warnings"
    assert version_status("1.2.3", current="1.2.0") == "pending"


def test_status_and_messages_of_an_import() -> None:
    newer = read_dsl(MINIMAL.replace("0.6.0", "0.7.0"))
    assert newer.status == "pending"
    assert newer.version_warning is not None
    assert "newer than 0.6.0" in newer.version_warning
    assert newer.warnings[0] == newer.version_warning
    older = read_dsl(MINIMAL.replace("0.6.0", "0.4.0"))
    assert older.status == "completed-with-warnings"
    assert older.imported_version == "0.4.0"
    assert older.current_version == CURRENT_DSL_VERSION
    assert read_dsl(MINIMAL).warnings == []


def test_a_missing_version_is_0_1_0() -> None:
    app = read_dsl(MINIMAL.replace("version: 0.6.0\n", ""))
    assert app.imported_version == "0.1.0"
    assert app.status == "completed-with-warnings"


@pytest.mark.parametrize(
    ("line", "message"),
    [("version: 0.6", "must be a string"), ("version: nope", "'nope' is not a version")],
)
def test_a_bad_version_fails(line: str, message: str) -> None:
    with pytest.raises(DslError, match=message):
        read_dsl(MINIMAL.replace("version: 0.6.0", line))


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("app: {name: [unclosed\n", r"not valid YAML: line \d+, column \d+"),
        ("app:\n  name: a\n mode: b\n", r"not valid YAML: line 3, column 2"),
        ("- a\n- b\n", "must be a YAML mapping .* but it is a list"),
        ("", "must be a YAML mapping .* but it is empty"),
        ("just text", "but it is a str"),
        ("kind: rag_pipeline\napp: {mode: workflow}\n", "kind is 'rag_pipeline'"),
        ("version: 0.6.0\nkind: app\n", "no app section"),
        ("app: {name: x}\n", "app.mode is missing"),
        ("app: [x]\n", "app must be a mapping"),
        ("app: {mode: chatbot}\n", "app.mode 'chatbot' is not an app mode .*advanced-chat"),
        ("app: {mode: workflow}\n", "needs a workflow section"),
        ("app: {mode: chat}\n", "needs a model_config section"),
        ("app: {mode: workflow}\nworkflow: {graph: [1]}\n", "workflow.graph must be a mapping"),
        (
            "app: {mode: workflow}\nworkflow: {graph: {nodes: [{id: a}]}}\n",
            "workflow.graph cannot be read",
        ),
        (
            "app: {mode: workflow}\nworkflow:\n  graph: {}\n"
            "  environment_variables: [{name: k, value_type: password}]\n",
            "environment variable 'k': value_type must be one of",
        ),
        (
            "app: {mode: workflow}\nworkflow:\n  graph: {}\n"
            "  environment_variables: [{name: n, value_type: number, value: many}]\n",
            "environment variable 'n': the value must be a number",
        ),
        (
            "app: {mode: advanced-chat}\nworkflow:\n  graph: {}\n"
            "  conversation_variables: [{name: c, value_type: number, value: x}]\n",
            "conversation variable 'c': the value is not a number",
        ),
        ("app: {mode: workflow}\nworkflow: {graph: {}, features: []}\n", "features must be"),
    ],
)
def test_bad_files_give_clear_errors(text: str, message: str) -> None:
    with pytest.raises(DslError, match=message) as caught:
        read_dsl(text)
    assert caught.value.status == 400


def test_a_file_over_the_size_limit_fails() -> None:
    with pytest.raises(DslError, match="larger than the limit of 10 MiB"):
        read_dsl("a: '" + "x" * (10 * 1024 * 1024) + "'\n")


def test_an_alias_bomb_fails() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 4)}]" for i in range(1, 12)]
    with pytest.raises(DslError, match="too large"):
        read_dsl("\n".join(lines) + "\n")


def test_python_tags_are_refused() -> None:
    with pytest.raises(DslError, match="not valid YAML"):
        read_dsl("app: !!python/object/apply:os.system ['true']\n")


# --- provider ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dify_id", "tusk_name"),
    [
        ("langgenius/openai/openai", "openai"),
        ("openai", "openai"),
        ("langgenius/anthropic/anthropic", "anthropic"),
        ("langgenius/azure_openai/azure_openai", "openai"),
        ("openai_api_compatible", "openai"),
        ("langgenius/deepseek/deepseek", "deepseek"),
        ("langgenius/gemini/google", "google"),
        ("", ""),
    ],
)
def test_dify_provider_ids_map_to_tusk_providers(dify_id: str, tusk_name: str) -> None:
    assert tusk_provider(dify_id) == tusk_name


def test_a_provider_map_overrides_by_any_form_of_the_id() -> None:
    mapping = {"ollama": "my-ollama", "langgenius/tongyi/tongyi": "qwen"}
    assert tusk_provider("langgenius/ollama/ollama", mapping) == "my-ollama"
    assert tusk_provider("ollama", mapping) == "my-ollama"
    assert tusk_provider("tongyi", mapping) == "qwen"
    assert full_provider_id("openai") == "langgenius/openai/openai"
    assert full_provider_id("someone/plugin/provider") == "someone/plugin/provider"


def test_plugins_map_to_providers_tusk_serves() -> None:
    assert serving_provider("langgenius/openai") == "openai"
    assert serving_provider("langgenius/azure_openai") == "openai"
    assert serving_provider("langgenius/tavily") is None
    assert serving_provider("langgenius/deepseek", known={"deepseek"}) == "deepseek"


def test_dependency_shapes() -> None:
    github = {
        "type": "github",
        "value": {
            "repo": "someone/plugin",
            "version": "1.0.0",
            "package": "plugin.difypkg",
            "github_plugin_unique_identifier": "someone/plugin:1.0.0@abc",
        },
    }
    package = {"type": "package", "value": {"plugin_unique_identifier": "me/tool:2.1@ff"}}
    read_github, read_package = read_dependency(github), read_dependency(package)
    assert read_github is not None
    assert read_package is not None
    assert (read_github.source, read_github.plugin_id, read_github.version) == (
        "github",
        "someone/plugin",
        "1.0.0",
    )
    assert (read_package.plugin_id, read_package.label) == ("me/tool", "me/tool 2.1")
    assert read_dependency({"type": "marketplace", "value": {}}) is None
    assert read_dependency("junk") is None


def test_a_dependency_without_a_plugin_is_a_note_not_a_failure() -> None:
    text = MINIMAL + "dependencies:\n- {type: marketplace, value: {}}\n- just-a-string\n"
    app = read_dsl(text)
    assert app.plugins == ()
    assert "dependencies[0] names no plugin; ignored" in app.warnings
    assert "dependencies[1] names no plugin; ignored" in app.warnings


def test_models_without_a_tusk_provider_are_warned_about() -> None:
    warned = read_dsl(fixture("tusk-chat.yml"))
    assert [(m.provider, m.model, m.tusk_provider) for m in warned.models] == [
        ("deepseek", "deepseek-chat", "deepseek")
    ]
    assert any("need a model provider named 'deepseek'" in w for w in warned.warnings)
    configured = read_dsl(fixture("tusk-chat.yml"), known_providers={"openai", "deepseek"})
    assert not any("deepseek" in w for w in configured.warnings)
    mapped = read_dsl(fixture("tusk-chat.yml"), provider_map={"deepseek": "openai"})
    assert mapped.models[0].tusk_provider == "openai"
    assert not any("deepseek" in w for w in mapped.warnings)


def test_graph_model_refs_name_each_node() -> None:
    app = read_dsl(fixture("tusk-workflow-tool-secrets.yml"))
    assert app.workflow is not None
    refs = graph_model_refs(app.workflow.graph)
    assert [(r.where, r.provider, r.model, r.tusk_provider) for r in refs] == [
        ("node llm (Answer)", "langgenius/openai/openai", "gpt-4o-mini", "openai")
    ]


# --- the corpus report -----------------------------------------------------------------------


def test_the_report_lists_files_node_types_and_unrunnable_nodes(tmp_path: Path) -> None:
    for path in corpus.dsl_files(FIXTURES):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "broken.yml").write_text("- not an app\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("# not a DSL file\n", encoding="utf-8")
    out = tmp_path / "report.md"
    assert corpus.main([str(tmp_path), "-o", str(out)]) == 0
    report = out.read_text(encoding="utf-8")
    assert "python -m tusk.workflow.corpus" in report
    assert "| `tool` | 1 | 1 | yes |" in report  # the type runs; this node's provider does not
    assert "| `agent` | 1 | 1 | yes |" in report  # the type runs; this node's strategy does not
    assert "the agent strategy '信息收集' of 'svcvit/agent/agent' is not available" in report
    assert "| `start` | 6 | 6 | yes |" in report
    assert "| `broken.yml` |  |  | failed: the file must be a YAML mapping" in report
    assert "notes.md" not in report
    assert (
        "- node `search` (Web search, `tool`): the built-in tool provider 'langgenius/tavily"
        in report
    )
    row = next(line for line in report.splitlines() if "`tusk-chat.yml`" in line)
    assert "| chat | 0.1.0 | completed-with-warnings | (no graph) | none | same |" in row
    assert "9 files: 4 completed, 4 completed-with-warnings, 1 failed." in report


def test_round_trip_differences_are_named() -> None:
    assert corpus.round_trip_differences(MINIMAL) == []
    free = corpus.NODE_FREE_PATH
    kb = {"id": "k", "data": {"type": "knowledge-retrieval", "dataset_ids": ["x"]}}
    changed = {"id": "k", "data": {"type": "knowledge-retrieval", "dataset_ids": []}}
    assert corpus._list_differences("node", [kb], [changed], free) == []
    retitled = {"id": "k", "data": {**changed["data"], "title": "new"}}
    assert corpus._list_differences("node", [kb], [retitled], free) == ["node k differs"]
    assert corpus._list_differences("edge", [{"id": 1}, {"id": 2}], [{"id": 2}, {"id": 1}]) == [
        "edges added [], removed [] or reordered"
    ]
    assert corpus._list_differences("edge", [{"id": 1}], []) == [
        "edges added [], removed ['1'] or reordered"
    ]


def test_import_leaves_a_knowledge_node_without_dataset_ids_alone() -> None:
    data = yaml.safe_load(MINIMAL)
    node = {"id": "kb", "data": {"type": "knowledge-retrieval", "title": "KB"}}
    data["workflow"]["graph"]["nodes"].append(node)
    app = read_dsl(yaml.safe_dump(data))
    assert app.workflow is not None
    assert app.workflow.graph["nodes"][-1] == node
    assert not any("knowledge base id" in w for w in app.warnings)


def test_file_input_defaults_naming_uploads_are_not_exported() -> None:
    uploaded = {"transfer_method": "local_file", "upload_file_id": "f1", "type": "document"}
    remote = {"transfer_method": "remote_url", "url": "https://example.com/a.pdf"}
    variables = [
        {"variable": "one", "type": "file", "default": uploaded},
        {"variable": "many", "type": "file-list", "default": [uploaded, remote]},
        {"variable": "only", "type": "file-list", "default": [{"uploadedId": "f2"}]},
        {"variable": "text", "type": "text-input", "default": {"upload_file_id": "kept"}},
    ]
    data = yaml.safe_load(MINIMAL)
    data["workflow"]["graph"]["nodes"][0]["data"]["variables"] = variables
    app = read_dsl(yaml.safe_dump(data))
    exported = yaml.safe_load(export(app, include_secret=True))
    start = exported["workflow"]["graph"]["nodes"][0]["data"]["variables"]
    assert [v.get("default") for v in start] == [None, [remote], None, {"upload_file_id": "kept"}]
    assert app.workflow is not None
    assert app.workflow.graph["nodes"][0]["data"]["variables"][0]["default"] == uploaded
