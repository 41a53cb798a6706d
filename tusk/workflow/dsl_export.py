"""Writing Dify's app DSL (tusk.workflow.dsl reads it): the file an app is exported to, with
what must not leave its workspace removed."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from tusk.workflow.dsl import (
    CONFIG_MODES,
    CURRENT_DSL_VERSION,
    FILE_INPUT_TYPES,
    UPLOAD_ID_KEYS,
    WORKFLOW_MODES,
    AppFields,
    DslError,
    WorkflowFields,
)

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the same output, in C


def sanitize_graph(graph: Mapping[str, Any], *, include_secret: bool) -> dict[str, Any]:
    """A copy of the graph fit to leave the workspace: credential ids of tool and agent nodes
    removed (unless include_secret), webhook URLs and trigger subscriptions cleared, and default
    values of file inputs that point at this workspace's uploads dropped. Knowledge-retrieval
    `dataset_ids` are written as the plain UUIDs they are: Dify encrypts them with a key of the
    workspace, so that its export imports only into the same workspace; Tusk does not, and on
    import drops ids it cannot read."""
    copied: dict[str, Any] = copy.deepcopy(dict(graph))
    for node in copied.get("nodes") or []:
        data = node.get("data") if isinstance(node, dict) else None
        if not isinstance(data, dict):
            continue
        node_type = data.get("type")
        _drop_uploaded_defaults(data.get("variables"))
        if node_type == "tool" and not include_secret:
            data.pop("credential_id", None)
        elif node_type == "agent" and not include_secret:
            for tool in _agent_tools(data):
                tool.pop("credential_id", None)
        elif node_type == "trigger-webhook":
            data["webhook_url"], data["webhook_debug_url"] = "", ""
        elif node_type == "trigger-plugin":
            data["subscription_id"] = ""
    return copied


def _drop_uploaded_defaults(variables: Any) -> None:
    """File inputs' defaults that name an uploaded file (its id means nothing elsewhere)."""
    for var in variables if isinstance(variables, list) else []:
        if not isinstance(var, dict) or var.get("type") not in FILE_INPUT_TYPES:
            continue
        default = var.get("default")
        kept = [f for f in default if not _uploaded(f)] if isinstance(default, list) else default
        if kept == [] or (not isinstance(default, list) and _uploaded(default)):
            var.pop("default", None)
        elif "default" in var:
            var["default"] = kept


def _uploaded(file: Any) -> bool:
    if not isinstance(file, Mapping):
        return False
    method = file.get("transfer_method") or file.get("transferMethod")
    return method == "local_file" or not UPLOAD_ID_KEYS.isdisjoint(file)


def _agent_tools(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    params = data.get("agent_parameters")
    tools = params.get("tools") if isinstance(params, Mapping) else None
    value = tools.get("value") if isinstance(tools, Mapping) else None
    return [t for t in value if isinstance(t, dict)] if isinstance(value, list) else []


def _export_variable(var: Mapping[str, Any], include_secret: bool) -> dict[str, Any]:
    exported = dict(var)
    if exported.get("value_type") == "secret" and not include_secret:
        exported["value"] = ""
    return exported


def _export_workflow(workflow: WorkflowFields, include_secret: bool) -> dict[str, Any]:
    return {
        "conversation_variables": copy.deepcopy(workflow.conversation_variables),
        "environment_variables": [
            _export_variable(v, include_secret) for v in workflow.environment_variables
        ],
        "features": copy.deepcopy(workflow.features),
        "graph": sanitize_graph(workflow.graph, include_secret=include_secret),
        "rag_pipeline_variables": copy.deepcopy(workflow.rag_pipeline_variables),
    }


def _export_model_config(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """Tool credential ids never leave the workspace (as Dify does for model configs)."""
    copied: dict[str, Any] = copy.deepcopy(dict(model_config))
    agent_mode = copied.get("agent_mode")
    tools = agent_mode.get("tools") if isinstance(agent_mode, dict) else None
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict):
            tool.pop("credential_id", None)
    return copied


def write_dsl(
    app: AppFields,
    workflow: WorkflowFields | None = None,
    *,
    model_config: Mapping[str, Any] | None = None,
    include_secret: bool = False,
    dependencies: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The app as a DSL file of CURRENT_DSL_VERSION, laid out as Dify exports (keys sorted).
    Secret environment variables are blanked unless include_secret (the caller passes them
    decrypted when it is set). `dependencies` is written as given (Tusk installs no plugins):
    pass back what was imported, so that the file still lists them for Dify."""
    fields = dataclasses.asdict(app)  # name, mode, icon, ..., as Dify writes them
    if not app.finish_in_background:
        del fields["finish_in_background"]
    data: dict[str, Any] = {
        "app": fields,
        "dependencies": [dict(d) for d in dependencies],
        "kind": "app",
        "version": CURRENT_DSL_VERSION,
    }
    if app.mode in WORKFLOW_MODES:
        if workflow is None:
            raise DslError(f"an {app.mode} app is exported with its workflow")
        data["workflow"] = _export_workflow(workflow, include_secret)
    elif app.mode in CONFIG_MODES:
        if model_config is None:
            raise DslError(f"a {app.mode} app is exported with its model config")
        data["model_config"] = _export_model_config(model_config)
    else:
        raise DslError(f"app mode {app.mode!r} cannot be exported")
    try:
        return str(yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=True))
    except yaml.YAMLError as exc:
        raise DslError(f"the app holds a value that cannot be written as YAML: {exc}") from None
