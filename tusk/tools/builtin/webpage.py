"""Web page fetch: a page's readable text (HTML without scripts, styles and markup), through the
SSRF guard like the HTTP request node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tusk.net.ssrf import AllowList
from tusk.rag.extract import ExtractionError, extract
from tusk.tools.base import Tool, ToolContext, ToolError, ToolProvider, ToolResult, object_schema
from tusk.tools.http import Fetched, Outgoing, fetch, truncation_note

MAX_PAGE_BYTES = 5 * 1024 * 1024
MAX_TEXT_CHARS = 100_000
DEFAULT_USER_AGENT = "Mozilla/5.0 (compatible; Tusk)"
TEXT_TYPES = ("json", "xml", "javascript", "yaml", "csv")


def page_text(page: Fetched) -> str:
    """The readable text of a fetched page, or a ToolError saying why there is none."""
    kind = page.content_type
    if "html" in kind:
        filename = "page.html"
    elif kind.startswith("text/") or any(t in kind for t in TEXT_TYPES) or not kind:
        filename = "page.txt"
    else:
        raise ToolError(f"{page.url} is not a web page: its content type is {kind}")
    try:
        return extract(page.content, filename).text.strip()
    except ExtractionError:
        return ""


def clipped(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n[The text was longer than {limit} characters and was cut there.]"


class FetchWebpage(Tool):
    name = "fetch_webpage"
    label = "Web Page"
    description = "Fetch a web page by URL and return its readable text."
    parameters = object_schema(
        {
            "url": {"type": "string", "description": "http:// or https:// URL of the page"},
            "user_agent": {"type": "string", "description": "User-Agent header to send"},
        },
        ["url"],
    )

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        url = str(params["url"]).strip()
        if not url.startswith(("http://", "https://")):
            raise ToolError(f"the URL must start with http:// or https://, not {url[:100]!r}")
        agent = str(params.get("user_agent") or DEFAULT_USER_AGENT)
        out = Outgoing("GET", url, headers={"User-Agent": agent})
        allow = AllowList.from_settings(context.resources.settings)
        page = await fetch(allow, out, limit=MAX_PAGE_BYTES, timeout=context.timeout)
        if page.status_code >= 400:
            raise ToolError(f"{url} answered with HTTP status {page.status_code}")
        text = clipped(page_text(page))
        if page.truncated:
            text += truncation_note(MAX_PAGE_BYTES)
        return ToolResult(text=text)


class WebpageProvider(ToolProvider):
    name = "webpage"
    label = "Web Page"
    description = "Read web pages."

    def tools(self) -> Sequence[Tool]:
        return (FetchWebpage(),)
