"""Custom tools from OpenAPI 3.x specs: each operation becomes a tool whose parameters are the
operation's path, query and header parameters and the properties of its JSON body.

Reading a spec is pure (`read_spec(text) -> list[Operation]`, SpecInvalid with the reason);
calling an operation goes out through the SSRF guard with the provider's auth, and a response
over the size limit is cut with a note."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urljoin

import yaml

from tusk.errors import InvalidParam
from tusk.net.ssrf import AllowList
from tusk.tools.base import Tool, ToolContext, ToolError, ToolProvider, ToolResult, object_schema
from tusk.tools.http import Fetched, Outgoing, fetch, truncation_note

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
LOCATIONS = ("path", "query", "header", "cookie")
MAX_RESPONSE_BYTES = 256 * 1024
MAX_SPEC_BYTES = 2 * 1024 * 1024
MAX_REF_DEPTH = 32
NAME = re.compile(r"[^A-Za-z0-9_-]+")
HEADER_PREFIXES = {"bearer": "Bearer ", "basic": "Basic ", "custom": "", "no_prefix": ""}


class SpecInvalid(InvalidParam):
    """The spec cannot be used; the message says why."""


# --- reading a spec (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    name: str
    location: Literal["path", "query", "header", "cookie", "body"]
    required: bool
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    server_url: str
    summary: str = ""
    parameters: tuple[Parameter, ...] = ()
    body_whole: bool = False  # the body is not an object: it is sent as the `body` parameter
    extra: dict[str, Any] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        properties = {}
        for p in self.parameters:
            described = dict(p.schema)
            if p.description and "description" not in described:
                described["description"] = p.description
            properties[p.name] = described
        required = [p.name for p in self.parameters if p.required]
        return object_schema(properties, required)


def load_document(text: str) -> dict[str, Any]:
    """A spec's text (JSON or YAML) as a mapping."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecInvalid(f"the spec is over {MAX_SPEC_BYTES // 1024 // 1024} MB")
    try:
        document = json.loads(text)
    except ValueError:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecInvalid(f"the spec is neither JSON nor YAML: {exc}") from None
    if not isinstance(document, dict):
        raise SpecInvalid("the spec must be a JSON or YAML object with `openapi` and `paths`")
    return document


class _Refs:
    """Local `$ref`s (`#/components/...`) resolved in place, with cycles and depth bounded."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def target(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise SpecInvalid(f"only references inside the spec are supported, not {ref!r}")
        node: Any = self.document
        for part in ref[2:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or key not in node:
                raise SpecInvalid(f"the reference {ref!r} points to nothing")
            node = node[key]
        return node

    def resolve(self, value: Any, seen: tuple[str, ...] = ()) -> Any:
        if len(seen) > MAX_REF_DEPTH:
            raise SpecInvalid("references nest too deep")
        if isinstance(value, Mapping):
            ref = value.get("$ref")
            if isinstance(ref, str):
                if ref in seen:  # a recursive schema: stop with an open schema
                    return {"type": "object"}
                return self.resolve(self.target(ref), (*seen, ref))
            return {k: self.resolve(v, seen) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, seen) for v in value]
        return value


def _server_url(document: Mapping[str, Any], base_url: str | None) -> str:
    servers = document.get("servers")
    url = ""
    if isinstance(servers, list) and servers and isinstance(servers[0], Mapping):
        url = str(servers[0].get("url") or "")
        for name, variable in (servers[0].get("variables") or {}).items():
            url = url.replace("{" + name + "}", str((variable or {}).get("default", "")))
    if base_url:
        url = urljoin(base_url, url or "/")
    if not url.startswith(("http://", "https://")):
        raise SpecInvalid(
            "the spec names no server: add `servers: [{url: https://...}]` with an absolute URL"
        )
    return url.rstrip("/")


def tool_name(raw: str) -> str:
    return re.sub("_{2,}", "_", NAME.sub("_", raw)).strip("_")[:64] or "operation"


def _parameter(raw: Any, where: str) -> Parameter:
    if not isinstance(raw, Mapping) or not raw.get("name") or raw.get("in") not in LOCATIONS:
        raise SpecInvalid(f"{where}: each parameter needs a `name` and `in` (path, query, ...)")
    given = raw.get("schema")
    schema: Mapping[str, Any] = given if isinstance(given, Mapping) else {"type": "string"}
    location = raw["in"]
    required = bool(raw.get("required")) or location == "path"
    return Parameter(
        str(raw["name"]), location, required, dict(schema), str(raw.get("description") or "")
    )


def _body(raw: Any, taken: set[str]) -> tuple[list[Parameter], bool]:
    """The JSON body's properties as parameters, or the whole body as one `body` parameter."""
    if not isinstance(raw, Mapping):
        return [], False
    content = raw.get("content") or {}
    media = next((v for k, v in content.items() if "json" in k), None)
    if not isinstance(media, Mapping) or not isinstance(media.get("schema"), Mapping):
        return [], False
    schema = media["schema"]
    required = set(schema.get("required") or [])
    properties = schema.get("properties")
    if schema.get("type", "object") != "object" or not isinstance(properties, Mapping):
        whole = Parameter("body", "body", bool(raw.get("required")), dict(schema))
        return [whole], True
    return [
        Parameter(name, "body", name in required, dict(prop if isinstance(prop, Mapping) else {}))
        for name, prop in properties.items()
        if name not in taken
    ], False


def _operation(
    path: str, method: str, raw: Mapping[str, Any], shared: Sequence[Any], server: str
) -> Operation:
    where = f"{method.upper()} {path}"
    by_key = {}
    for item in [*shared, *(raw.get("parameters") or [])]:
        parameter = _parameter(item, where)
        by_key[(parameter.name, parameter.location)] = parameter
    parameters = [p for p in by_key.values() if p.location != "cookie"]
    body, whole = _body(raw.get("requestBody"), {p.name for p in parameters})
    name = tool_name(str(raw.get("operationId") or f"{method}_{path}"))
    summary = str(raw.get("summary") or raw.get("description") or "")
    return Operation(name, method, path, server, summary, (*parameters, *body), whole)


def _unique(operations: list[Operation]) -> list[Operation]:
    seen: dict[str, int] = {}
    unique = []
    for op in operations:
        count = seen.get(op.name, 0)
        seen[op.name] = count + 1
        unique.append(op if count == 0 else _renamed(op, f"{op.name}_{count + 1}"))
    return unique


def _renamed(op: Operation, name: str) -> Operation:
    return Operation(
        name, op.method, op.path, op.server_url, op.summary, op.parameters, op.body_whole
    )


def read_spec(text: str, base_url: str | None = None) -> list[Operation]:
    """The operations of an OpenAPI 3.x spec, or SpecInvalid saying what is wrong with it."""
    raw = load_document(text)
    version = str(raw.get("openapi") or "")
    if not version.startswith("3."):
        found = f"swagger {raw['swagger']}" if "swagger" in raw else repr(version or None)
        raise SpecInvalid(f"only OpenAPI 3.x specs are supported; this one is {found}")
    if not isinstance(raw.get("paths"), Mapping) or not raw["paths"]:
        raise SpecInvalid("the spec has no `paths`")
    refs = _Refs(raw)
    server = _server_url(raw, base_url)
    operations = []
    for path, item in raw["paths"].items():
        item = refs.resolve(item)
        if not isinstance(item, Mapping):
            raise SpecInvalid(f"the path {path!r} is not an object")
        shared = item.get("parameters") or []
        for method in METHODS:
            if isinstance(item.get(method), Mapping):
                operations.append(_operation(str(path), method, item[method], shared, server))
    if not operations:
        raise SpecInvalid("the spec's paths have no operations (get, post, ...)")
    return _unique(operations)


# --- calling an operation ----------------------------------------------------------------------


@dataclass(frozen=True)
class ApiAuth:
    """Dify's API tool credentials: `auth_type` none, api_key_header or api_key_query."""

    auth_type: str = "none"
    api_key_header: str = "Authorization"
    api_key_header_prefix: str = "no_prefix"
    api_key_query_param: str = "key"
    api_key_value: str = ""

    @classmethod
    def of(cls, credentials: Mapping[str, Any]) -> ApiAuth:
        kind = str(credentials.get("auth_type") or "none")
        if kind == "api_key":  # Dify's older name of a header key
            kind = "api_key_header"
        if kind not in ("none", "api_key_header", "api_key_query"):
            raise InvalidParam(
                f"auth_type must be none, api_key_header or api_key_query, not {kind!r}",
                params="credentials",
            )
        return cls(
            kind,
            str(credentials.get("api_key_header") or "Authorization"),
            str(credentials.get("api_key_header_prefix") or "no_prefix"),
            str(credentials.get("api_key_query_param") or "key"),
            str(credentials.get("api_key_value") or ""),
        )

    def apply(self, headers: dict[str, str], query: dict[str, str]) -> None:
        if self.auth_type == "none":
            return
        if not self.api_key_value:
            raise ToolError("the tool's API key is empty: set it in the tool provider")
        if self.auth_type == "api_key_query":
            query[self.api_key_query_param] = self.api_key_value
            return
        prefix = HEADER_PREFIXES.get(self.api_key_header_prefix, "")
        headers[self.api_key_header] = prefix + self.api_key_value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)


def build_request(op: Operation, params: Mapping[str, Any], auth: ApiAuth) -> Outgoing:
    """The HTTP request for one call of `op` (pure)."""
    path, query, headers, body = op.path, {}, {}, {}
    for p in op.parameters:
        if p.name not in params:
            continue
        value = params[p.name]
        if p.location == "path":
            path = path.replace("{" + p.name + "}", quote(_text(value), safe=""))
        elif p.location == "query":
            query[p.name] = _text(value)
        elif p.location == "header":
            headers[p.name] = _text(value)
        else:
            body[p.name] = value
    auth.apply(headers, query)
    has_body = bool(body) or any(p.location == "body" and p.required for p in op.parameters)
    payload: Any = body.get("body") if op.body_whole else body
    return Outgoing(op.method, op.server_url + path, query, headers, payload, has_body)


def response_result(op: Operation, page: Fetched, limit: int) -> ToolResult:
    text = page.content.decode("utf-8", "replace")
    if page.status_code >= 400:
        raise ToolError(
            f"{op.method.upper()} {op.path} answered HTTP {page.status_code}: {text[:500]}"
        )
    if page.truncated:
        return ToolResult(text=text + truncation_note(limit))
    if "json" in page.content_type:
        try:
            return ToolResult.of_json(json.loads(text), text)
        except ValueError:
            pass
    return ToolResult(text=text)


class ApiTool(Tool):
    def __init__(self, op: Operation, auth: ApiAuth, limit: int = MAX_RESPONSE_BYTES) -> None:
        self.op = op
        self.auth = auth
        self.limit = limit
        self.name = op.name
        self.label = op.name
        self.description = op.summary or f"{op.method.upper()} {op.path}"
        self.parameters = op.schema()

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        out = build_request(self.op, params, self.auth)
        allow = AllowList.from_settings(context.resources.settings)
        page = await fetch(allow, out, limit=self.limit, timeout=context.timeout)
        return response_result(self.op, page, self.limit)


class ApiProvider(ToolProvider):
    """A stored OpenAPI spec with its auth; `name` is per instance here."""

    def __init__(self, name: str, operations: Sequence[Operation], auth: ApiAuth) -> None:
        self.name = self.label = name
        self._tools = tuple(ApiTool(op, auth) for op in operations)

    def tools(self) -> Sequence[Tool]:
        return self._tools
