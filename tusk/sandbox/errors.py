"""Typed errors of the code sandbox.

What the user's code did wrong is a `CodeExecutionError` (400, code "code_execution_error"), one
subclass a cause, told apart by `kind`; `details` carries what helps the user fix it (the line of
a syntax error, the last lines of a traceback, the limit that was hit) and `stdout` what the code
printed before it failed. A sandbox that cannot run code at all is `SandboxUnavailable` (503).
"""

from __future__ import annotations

from collections.abc import Mapping

from tusk.errors import TuskError


class SandboxUnavailable(TuskError):
    """Code cannot run here: bubblewrap or an interpreter is missing, or the sandbox fails."""

    code, status = "sandbox_unavailable", 503


class CodeExecutionError(TuskError):
    code, status = "code_execution_error", 400
    kind = "code_execution_error"

    def __init__(
        self, message: str, *, details: Mapping[str, object] | None = None, stdout: str = ""
    ) -> None:
        super().__init__(message)
        self.details: dict[str, object] = dict(details or {})
        self.stdout = stdout


class CodeTimeout(CodeExecutionError):
    """Ran past the wall-clock timeout, or used up its CPU seconds."""

    kind = "timeout"


class MemoryLimitExceeded(CodeExecutionError):
    kind = "memory_exceeded"


class OutputTooLarge(CodeExecutionError):
    """The returned dict (or what the code wrote to the response stream) is over the limit."""

    kind = "output_too_large"


class CodeSyntaxError(CodeExecutionError):
    """The code does not compile; `line` (1-based) says where, when known."""

    kind = "syntax_error"

    @property
    def line(self) -> int | None:
        line = self.details.get("line")
        return line if isinstance(line, int) else None


class CodeRuntimeError(CodeExecutionError):
    """The code raised, or its process crashed or exited before `main` returned."""

    kind = "runtime_error"

    @property
    def line(self) -> int | None:
        line = self.details.get("line")
        return line if isinstance(line, int) else None

    @property
    def traceback(self) -> list[str]:
        lines = self.details.get("traceback")
        return [str(line) for line in lines] if isinstance(lines, list) else []


class BadReturnType(CodeExecutionError):
    """`main` returned something other than a dict of JSON values within the depth limit."""

    kind = "bad_return_type"


ERRORS_BY_KIND: dict[str, type[CodeExecutionError]] = {
    cls.kind: cls
    for cls in (
        CodeTimeout,
        MemoryLimitExceeded,
        OutputTooLarge,
        CodeSyntaxError,
        CodeRuntimeError,
        BadReturnType,
    )
}
