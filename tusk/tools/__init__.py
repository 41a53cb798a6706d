"""Tools that models and workflows call: built-in ones (current time, web page fetch, knowledge
search, code interpreter), operations of OpenAPI specs, tools of MCP servers, and published
workflows. See docs/tools.md.

    tool = await registry.find_tool(db, secret_key, workspace_id, "builtin", "time", "current_time")
    result = await call(tool, '{"timezone": "Europe/Paris"}', ToolContext(workspace_id, resources))
    result.text, result.json, result.files, result.is_error
"""

from tusk.tools.base import (
    Tool,
    ToolContext,
    ToolError,
    ToolNotFound,
    ToolProvider,
    ToolResult,
    call,
)

__all__ = ["Tool", "ToolContext", "ToolError", "ToolNotFound", "ToolProvider", "ToolResult", "call"]
