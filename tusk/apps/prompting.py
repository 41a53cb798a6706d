"""The messages a chat or completion app sends to its model, built from its `model_config` as Dify
builds them (pure: no I/O).

`simple` prompts put the knowledge context and the app's `pre_prompt` (with `{{var}}` inputs) in a
system message, then the conversation so far, then the query. `advanced` prompts are the app's own
messages (`chat_prompt_config`) or text (`completion_prompt_config`) with `{{#context#}}`,
`{{#histories#}}` and `{{#query#}}` in them. For a completion-mode model everything goes into one
user message, the history written out as lines with role prefixes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tusk.apps.easy_config import EasyConfig
from tusk.models.types import Message
from tusk.workflow.nodes.prompts import RolePrefix, history_text
from tusk.workflow.values import to_text

# Dify's `{{name}}` variables, and the three special ones.
VARIABLE = re.compile(r"\{\{([a-zA-Z_][a-zA-Z0-9_]{0,29}|#histories#|#query#|#context#)\}\}")
CONTEXT_BLOCK = (
    "Below, between <context> and </context>, is reference material. Treat it as knowledge of "
    "your own.\n<context>\n{context}\n</context>\n\n"
    "When you answer:\n"
    "- say that you do not know when neither the material nor what you know covers the question;\n"
    "- ask a clarifying question when the request is unclear;\n"
    "- do not mention that the answer comes from the material;\n"
    "- reply in the language of the user's question.\n\n"
)
HISTORIES_BLOCK = (
    "The conversation so far, between <histories> and </histories>:\n"
    "<histories>\n{histories}\n</histories>\n\n"
)
CHAT_QUERY = "\n\nHuman: {query}\n\nAssistant: "
CHAT_STOPS = ("\nHuman:", "</histories>")


@dataclass(frozen=True)
class PromptInput:
    app_mode: str  # "chat" or "completion"
    inputs: Mapping[str, Any]
    query: str
    context: str | None = None  # None: the app has no knowledge, or nothing was found
    history: Sequence[Message] = field(default_factory=tuple)


@dataclass(frozen=True)
class Prompt:
    messages: list[Message]
    stops: list[str] = field(default_factory=list)  # for completion-mode models


def _plain(value: str) -> str:
    """A value put into a prompt: its own `{{x}}` become `{x}`, as Dify does."""
    return VARIABLE.sub(r"{\1}", value)


def fill(template: str, values: Mapping[str, str]) -> str:
    """The template's variables replaced by their values; unknown ones are left as written."""

    def swap(match: re.Match[str]) -> str:
        key = match.group(1)
        return _plain(values[key]) if key in values else match.group(0)

    return VARIABLE.sub(swap, template)


def text_inputs(inputs: Mapping[str, Any]) -> dict[str, str]:
    return {name: to_text(value) for name, value in inputs.items()}


def build_prompt(config: EasyConfig, given: PromptInput) -> Prompt:
    completion_model = config.model.mode == "completion"
    if config.prompt_type == "advanced":
        if completion_model:
            return _advanced_completion(config, given)
        return _advanced_chat(config, given)
    if completion_model:
        return _simple_completion(config, given)
    return _simple_chat(config, given)


def _simple_head(config: EasyConfig, given: PromptInput) -> str:
    """Knowledge context, then the app's instructions."""
    head = CONTEXT_BLOCK.format(context=given.context) if given.context else ""
    if config.pre_prompt:
        head += fill(config.pre_prompt, text_inputs(given.inputs)) + "\n"
    return head


def _simple_chat(config: EasyConfig, given: PromptInput) -> Prompt:
    head = _simple_head(config, given).strip()
    messages = [Message("system", head)] if head and given.query else []
    messages += list(given.history)
    messages.append(Message("user", given.query or head))
    return Prompt(messages)


def _simple_completion(config: EasyConfig, given: PromptInput) -> Prompt:
    text = _simple_head(config, given)
    if given.app_mode != "chat":
        return Prompt([Message("user", text + given.query)])
    if given.history:
        text += HISTORIES_BLOCK.format(histories=history_text(given.history))
    return Prompt([Message("user", text + CHAT_QUERY.format(query=given.query))], list(CHAT_STOPS))


def _advanced_chat(config: EasyConfig, given: PromptInput) -> Prompt:
    values = {**text_inputs(given.inputs), "#context#": given.context or ""}
    messages: list[Message] = []
    for item in config.chat_prompt_config.prompt:
        text = fill(item.text, values)
        if item.role != "system" or text:
            messages.append(Message(item.role, text))
    messages += list(given.history)
    if given.query:
        messages.append(Message("user", given.query))
    return Prompt(messages)


def _advanced_completion(config: EasyConfig, given: PromptInput) -> Prompt:
    prompt = config.completion_prompt_config
    roles = prompt.conversation_histories_role
    prefix = RolePrefix(user=roles.user_prefix, assistant=roles.assistant_prefix)
    values = {
        **text_inputs(given.inputs),
        "#context#": given.context or "",
        "#histories#": history_text(given.history, prefix),
        "#query#": given.query,
    }
    return Prompt([Message("user", fill(prompt.prompt.text, values))])
