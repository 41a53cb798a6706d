"""Prompts of the nodes that call a model: Dify's prompt templates (basic `{{#node.var#}}` text or
Jinja2), the knowledge context, the conversation history, images, JSON found in an answer, and
the prompts as Dify shows them in a node's process data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from tusk.models.types import ContentPart, ImagePart, Message, TextPart
from tusk.workflow.conditions import file_list
from tusk.workflow.files import WorkspaceFiles
from tusk.workflow.files import image_parts as file_image_parts
from tusk.workflow.nodes.base import Config, NodeContext, NodeError
from tusk.workflow.template import references, render
from tusk.workflow.values import to_text
from tusk.workflow.variables import Selector, VariablePool

CONTEXT_MARK = "{{#context#}}"
HISTORIES_MARK = "{{#histories#}}"
ChatRole = Literal["system", "user", "assistant"]
Edition = Literal["basic", "jinja2"]


class PromptText(Config):
    text: str = ""
    edition_type: Edition = "basic"
    jinja2_text: str | None = None


class ChatPromptItem(PromptText):
    role: ChatRole = "user"


class CompletionPrompt(PromptText):
    """The one prompt of a completion-mode model."""


class Jinja2Variable(Config):
    variable: str
    value_selector: list[str] = []


class PromptConfig(Config):
    jinja2_variables: list[Jinja2Variable] = []


class MemoryWindow(Config):
    enabled: bool = False
    size: int | None = None


class RolePrefix(Config):
    user: str = "Human"
    assistant: str = "Assistant"


class MemoryConfig(Config):
    """Present when a node remembers the conversation (chatflows only)."""

    window: MemoryWindow = MemoryWindow()
    query_prompt_template: str | None = None
    role_prefix: RolePrefix | None = None

    @property
    def limit(self) -> int | None:
        """How many past messages to keep; None keeps them all."""
        size = self.window.size
        return size if self.window.enabled and size and size > 0 else None


class VisionSettings(Config):
    variable_selector: list[str] = []
    detail: Literal["auto", "low", "high"] = "high"


class VisionConfig(Config):
    enabled: bool = False
    configs: VisionSettings = VisionSettings()


# --- rendering -----------------------------------------------------------------------------

_JINJA = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def render_basic(text: str, pool: VariablePool, context: str = "") -> str:
    """A basic template: references replaced by their text, then the knowledge context.
    References are rendered first, so text inside the context is never read as one."""
    return render(text, pool).replace(CONTEXT_MARK, context)


def jinja2_values(pool: VariablePool, variables: Iterable[Jinja2Variable]) -> dict[str, Any]:
    return {v.variable: pool.get(v.value_selector) for v in variables if v.value_selector}


def render_jinja2(text: str, values: Mapping[str, Any]) -> str:
    """A Jinja2 template in a sandbox: no attribute of Python's internals is reachable."""
    try:
        return _JINJA.from_string(text).render(**values)
    except jinja2.TemplateError as exc:
        raise NodeError(f"the Jinja2 prompt cannot be rendered: {exc}") from None


def render_prompt(
    prompt: PromptText, pool: VariablePool, values: Mapping[str, Any], context: str
) -> str:
    if prompt.edition_type == "jinja2":
        return render_jinja2(prompt.jinja2_text or "", values)
    return render_basic(prompt.text, pool, context)


def template_reads(texts: Iterable[str | None]) -> list[Selector]:
    return [selector for text in texts if text for selector in references(text)]


# --- context and history -------------------------------------------------------------------


def context_item_text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping) and isinstance(item.get("content"), str):
        summary = item.get("summary")
        has_summary = isinstance(summary, str) and bool(summary)
        return f"{summary}\n{item['content']}" if has_summary else item["content"]
    raise NodeError(
        "the context variable holds an item without `content`; use the result of a "
        "knowledge-retrieval node, a list of strings, or a string"
    )


def context_text(value: Any) -> str:
    """The knowledge context as the text that replaces {{#context#}}."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\n".join(context_item_text(item) for item in value).strip()
    return to_text(value)


async def history(ctx: NodeContext, memory: MemoryConfig | None) -> list[Message]:
    """The conversation so far, when the node has memory and the run is a chat."""
    if memory is None or ctx.run.history is None:
        return []
    return [m for m in await ctx.run.history.messages(memory.limit) if m.role != "system"]


def history_text(messages: Sequence[Message], prefix: RolePrefix | None = None) -> str:
    """The history as lines of text, for prompts that take it inline."""
    names = prefix or RolePrefix()
    lines = []
    for message in messages:
        name = names.user if message.role == "user" else names.assistant
        lines.append(f"{name}: {message.text}")
    return "\n".join(lines)


# --- images --------------------------------------------------------------------------------


async def image_parts(
    ctx: NodeContext, value: Any, detail: Literal["auto", "low", "high"]
) -> list[ImagePart]:
    """The images among the files of a variable, as parts of a message."""
    resources = ctx.run.resources
    files = WorkspaceFiles(resources.sessions, resources.storage, ctx.run.workspace_id)
    return await file_image_parts(files, file_list(value) or [], detail)


def with_images(messages: list[Message], images: Sequence[ImagePart]) -> list[Message]:
    """Images go with the last message when the user sent it, else in a message of their own."""
    if not images:
        return messages
    if messages and messages[-1].role == "user":
        last = messages[-1]
        content: list[ContentPart] = [TextPart(last.text), *images]
        return [*messages[:-1], Message("user", content)]
    return [*messages, Message("user", list(images))]


# --- answers and records -------------------------------------------------------------------


def _strip_fence(text: str) -> str:
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    return body.strip()


def find_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a model's answer (bare, fenced, or inside prose), or None."""
    body = _strip_fence(text)
    decoder = json.JSONDecoder()
    start = body.find("{")
    while start != -1:
        try:
            found, _ = decoder.raw_decode(body, start)
        except ValueError:
            start = body.find("{", start + 1)
            continue
        if isinstance(found, dict):
            return found
        start = body.find("{", start + 1)
    return None


def _shown_image(part: ImagePart) -> dict[str, Any]:
    url = part.url
    shown = url if len(url) <= 64 else f"{url[:32]}...[TRUNCATED]...{url[-16:]}"
    return {"type": "image", "data": shown, "detail": part.detail}


def _saved(message: Message) -> dict[str, Any]:
    files = (
        [_shown_image(p) for p in message.content if isinstance(p, ImagePart)]
        if not isinstance(message.content, str)
        else []
    )
    saved: dict[str, Any] = {"role": message.role, "text": message.text, "files": files}
    if message.tool_calls:
        saved["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return saved


def saved_prompts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The messages sent, as a node's process data shows them (images shortened)."""
    return [_saved(message) for message in messages]
