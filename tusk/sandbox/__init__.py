"""Isolated execution of user code (workflow code nodes, later agent code tools): Python and
JavaScript snippets run in bubblewrap sandboxes, each used once, served from a pre-started pool.

    async with Sandbox.from_settings(settings) as sandbox:
        result = await sandbox.run("python3", code, {"a": 1})  # code defines main(a) -> dict
        result.outputs, result.stdout

See docs/sandbox.md.
"""

from tusk.sandbox.command import Language, parse_language
from tusk.sandbox.errors import (
    BadReturnType,
    CodeExecutionError,
    CodeRuntimeError,
    CodeSyntaxError,
    CodeTimeout,
    MemoryLimitExceeded,
    OutputTooLarge,
    SandboxUnavailable,
)
from tusk.sandbox.limits import Limits
from tusk.sandbox.protocol import Result
from tusk.sandbox.runner import Sandbox, SandboxConfig

__all__ = [
    "BadReturnType",
    "CodeExecutionError",
    "CodeRuntimeError",
    "CodeSyntaxError",
    "CodeTimeout",
    "Language",
    "Limits",
    "MemoryLimitExceeded",
    "OutputTooLarge",
    "Result",
    "Sandbox",
    "SandboxConfig",
    "SandboxUnavailable",
    "parse_language",
]
