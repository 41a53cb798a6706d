"""Code interpreter: a Python or JavaScript script run in the sandbox; what it prints is the
result. The script is wrapped in the sandbox's `main` so that it needs none of its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tusk.sandbox import CodeExecutionError, SandboxUnavailable
from tusk.tools.base import Tool, ToolContext, ToolError, ToolProvider, ToolResult, object_schema

PYTHON_WRAPPER = """
def main(source):
    exec(compile(source, "<script>", "exec"), {"__name__": "__main__"})
    return {}
"""
JAVASCRIPT_WRAPPER = """
function main({source}) {
    new Function(source)();
    return {};
}
"""
WRAPPERS = {"python3": PYTHON_WRAPPER, "javascript": JAVASCRIPT_WRAPPER}


class RunCode(Tool):
    name = "run_code"
    label = "Code Interpreter"
    description = (
        "Run a Python or JavaScript script in an isolated sandbox and return what it prints. "
        "No network access; print the results you need."
    )
    parameters = object_schema(
        {
            "language": {"type": "string", "enum": ["python3", "javascript"]},
            "code": {"type": "string", "description": "the script; print what you want back"},
        },
        ["code"],
    )

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        language = str(params.get("language") or "python3")
        try:
            result = await context.resources.sandbox.run(
                language, WRAPPERS[language], {"source": params["code"]}
            )
        except (CodeExecutionError, SandboxUnavailable) as exc:
            raise ToolError(f"the code failed: {exc}") from None
        text = result.stdout
        if result.stdout_truncated:
            text += "\n[The output was cut: the script printed more than the sandbox keeps.]"
        return ToolResult(text=text or "(the script printed nothing)")


class CodeProvider(ToolProvider):
    name = "code"
    label = "Code Interpreter"
    description = "Run code in the sandbox."

    def tools(self) -> Sequence[Tool]:
        return (RunCode(),)
