"""The LLM node: Dify's prompt template rendered from the variable pool (with the knowledge
context, the conversation's memory and images), one streamed model call, and its text, reasoning,
usage and, when asked for, structured output.

Where Tusk differs from Dify:
- A completion-mode prompt is sent as one user message (Tusk's providers speak chat); its
  `{{#histories#}}` is replaced by the conversation as text.
- Structured output is asked for in the system prompt and parsed from the answer (Dify's way for
  models without native JSON-schema output), for every model.
- With reasoning_format "separated", the streamed text leaves out the <think> block too, so
  that what a chat shows while streaming is what the `text` output holds at the end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field

from tusk.models.types import Message
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import (
    Config,
    Node,
    NodeConfigError,
    NodeContext,
    NodeError,
    NodeResult,
    parse_config,
)
from tusk.workflow.nodes.models import ModelConfig, call_model, call_record, spend, usage_of
from tusk.workflow.nodes.prompts import (
    HISTORIES_MARK,
    ChatPromptItem,
    CompletionPrompt,
    MemoryConfig,
    PromptConfig,
    VisionConfig,
    context_text,
    find_json_object,
    history,
    history_text,
    image_parts,
    jinja2_values,
    render_basic,
    render_prompt,
    template_reads,
    with_images,
)
from tusk.workflow.variables import Selector, VariablePool

THINK = re.compile(r"<think[^>]*>(.*?)</think>", re.IGNORECASE | re.DOTALL)
OPEN_TAG, CLOSE_TAG = "<think>", "</think>"
STRUCTURED_INSTRUCTION = (
    "Answer with one JSON object that conforms to this JSON Schema, and nothing else: no prose, "
    "no Markdown code fence.\nJSON Schema:\n{schema}"
)


class ContextConfig(Config):
    enabled: bool = False
    variable_selector: list[str] | None = None


class StructuredOutput(Config):
    output_schema: Any = Field(None, alias="schema")


class LLMConfig(Config):
    model: ModelConfig
    prompt_template: list[ChatPromptItem] | CompletionPrompt = []
    prompt_config: PromptConfig = PromptConfig()
    context: ContextConfig = ContextConfig()
    memory: MemoryConfig | None = None
    vision: VisionConfig = VisionConfig()
    structured_output_enabled: bool = False
    structured_output: StructuredOutput | None = None
    reasoning_format: Literal["separated", "tagged"] = "tagged"


def split_reasoning(text: str) -> tuple[str, str]:
    """The text without its <think> blocks, and what they held."""
    thoughts = [match.strip() for match in THINK.findall(text)]
    clean = re.sub(r"\n\s*\n", "\n\n", THINK.sub("", text)).strip()
    return clean, "\n".join(thoughts)


def _partial_tag(text: str, tag: str) -> int:
    """How many characters at the end of `text` could start `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkFilter:
    """Streamed text with its <think> blocks left out, tags split across pieces included."""

    def __init__(self) -> None:
        self.inside = False
        self.pending = ""
        self.started = False  # text after a block starts without the blank lines

    def feed(self, piece: str) -> str:
        buffer, out = self.pending + piece, []
        self.pending = ""
        while buffer:
            tag = CLOSE_TAG if self.inside else OPEN_TAG
            found = buffer.find(tag)
            if found == -1:
                keep = _partial_tag(buffer, tag)
                if not self.inside:
                    out.append(buffer[: len(buffer) - keep])
                self.pending = buffer[len(buffer) - keep :]
                break
            if not self.inside:
                out.append(buffer[:found])
            buffer = buffer[found + len(tag) :]
            self.inside = not self.inside
        return self._shown("".join(out))

    def flush(self) -> str:
        rest, self.pending = ("" if self.inside else self.pending), ""
        return self._shown(rest)

    def _shown(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        return text


def output_schema(config: LLMConfig) -> dict[str, Any]:
    raw = config.structured_output.output_schema if config.structured_output else None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise NodeConfigError("structured_output.schema is not valid JSON") from None
    if not isinstance(raw, dict) or not raw:
        raise NodeConfigError(
            "structured output is enabled but structured_output.schema holds no JSON Schema"
        )
    return raw


def with_instruction(messages: list[Message], instruction: str) -> list[Message]:
    """`instruction` added to the system prompt (one is made if there is none)."""
    if messages and messages[0].role == "system":
        first = messages[0]
        return [Message("system", f"{first.text}\n\n{instruction}".strip()), *messages[1:]]
    return [Message("system", instruction), *messages]


class LLMNode(Node):
    type = "llm"
    streams = frozenset({"text"})

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(LLMConfig, spec)
        self.completion = isinstance(self.config.prompt_template, CompletionPrompt)
        enabled = self.config.structured_output_enabled
        self.schema = output_schema(self.config) if enabled else {}

    def _template_texts(self) -> list[str | None]:
        template = self.config.prompt_template
        items = [template] if isinstance(template, CompletionPrompt) else template
        texts = [item.text for item in items if item.edition_type == "basic"]
        return [*texts, self.config.memory.query_prompt_template if self.config.memory else None]

    def reads(self) -> Iterable[Selector]:
        config = self.config
        found = template_reads(self._template_texts())
        found += [v.value_selector for v in config.prompt_config.jinja2_variables]
        if config.context.enabled and config.context.variable_selector:
            found.append(config.context.variable_selector)
        if config.vision.enabled and config.vision.configs.variable_selector:
            found.append(config.vision.configs.variable_selector)
        return [selector for selector in found if selector]

    def output_names(self) -> frozenset[str]:
        names = {"text", "reasoning_content", "usage", "finish_reason"}
        return frozenset(
            names | ({"structured_output"} if self.config.structured_output_enabled else set())
        )

    def _context(self, pool: VariablePool) -> str:
        selector = self.config.context.variable_selector
        if not self.config.context.enabled or not selector:
            return ""
        return context_text(pool.get(selector))

    def _query(self, pool: VariablePool) -> str:
        memory = self.config.memory
        if memory is None:
            return ""
        if memory.query_prompt_template:
            return render_basic(memory.query_prompt_template, pool)
        return to_query(pool.get(["sys", "query"]))

    def _messages(self, pool: VariablePool, past: list[Message], context: str) -> list[Message]:
        """The template rendered, the remembered conversation, then the user's query."""
        config = self.config
        values = jinja2_values(pool, config.prompt_config.jinja2_variables)
        template = config.prompt_template
        if isinstance(template, CompletionPrompt):
            text = render_prompt(template, pool, values, context)
            prefix = config.memory.role_prefix if config.memory else None
            return [Message("user", text.replace(HISTORIES_MARK, history_text(past, prefix)))]
        messages = [
            Message(item.role, render_prompt(item, pool, values, context)) for item in template
        ]
        query = self._query(pool)
        return [*messages, *past, *([Message("user", query)] if query else [])]

    async def prompt(self, ctx: NodeContext, context: str) -> list[Message]:
        """The messages sent to the model, in Dify's order, then the images."""
        config = self.config
        past = await history(ctx, config.memory)
        messages = [m for m in self._messages(ctx.pool, past, context) if m.text.strip()]
        if config.vision.enabled:
            vision = config.vision.configs
            images = await image_parts(ctx, ctx.pool.get(vision.variable_selector), vision.detail)
            messages = with_images(messages, images)
        if not messages:
            raise NodeError("the LLM node has no prompt: write a prompt in its prompt template")
        if config.structured_output_enabled:
            schema = json.dumps(self.schema, ensure_ascii=False)
            messages = with_instruction(messages, STRUCTURED_INSTRUCTION.format(schema=schema))
        return messages

    def _inputs(self, pool: VariablePool, context: str) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            ".".join(selector): pool.get(selector)
            for selector in template_reads(self._template_texts())
        }
        for variable in self.config.prompt_config.jinja2_variables:
            inputs[variable.variable] = pool.get(variable.value_selector)
        if context:
            inputs["#context#"] = context
        return inputs

    async def run(self, ctx: NodeContext) -> NodeResult:
        config = self.config
        context = self._context(ctx.pool)
        messages = await self.prompt(ctx, context)
        hide = ThinkFilter() if config.reasoning_format == "separated" else None

        def on_text(piece: str) -> None:
            shown = hide.feed(piece) if hide else piece
            if shown:
                ctx.stream("text", shown)

        reply = await call_model(ctx, config.model, messages, on_text=on_text)
        if hide and (rest := hide.flush()):
            ctx.stream("text", rest)
        clean, reasoning = split_reasoning(reply.text)
        usage = usage_of(ctx, reply)
        outputs: dict[str, Any] = {
            "text": clean if config.reasoning_format == "separated" else reply.text,
            "reasoning_content": reasoning,
            "usage": usage,
            "finish_reason": reply.finish_reason,
        }
        if config.structured_output_enabled:
            outputs["structured_output"] = structured(clean)
        mode = "completion" if self.completion else "chat"
        process_data = call_record(config.model, messages, reply, usage, mode)
        return NodeResult(
            outputs=outputs,
            inputs=self._inputs(ctx.pool, context),
            process_data=process_data,
            metadata=spend(usage),
        )


def to_query(value: Any) -> str:
    return value if isinstance(value, str) else ""


def structured(text: str) -> dict[str, Any]:
    """The JSON object the model answered with, for the structured_output output."""
    found = find_json_object(text)
    if found is None:
        excerpt = text.strip()[:200]
        raise NodeError(
            f"the model's answer is not the JSON object the structured output asks for: {excerpt!r}"
        )
    return found
