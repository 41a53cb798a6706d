"""HTTP request: a request built from the node's fields (with `{{#node.var#}}` references) and
sent through the SSRF guard (`tusk.net.ssrf`). Outputs Dify's `status_code`, `body` (the text,
empty when the response is a file), `headers` (lower-case names) and `files` (the response as a
stored file, when it is one)."""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

import charset_normalizer
import httpx
from pydantic import field_validator

from tusk import storage
from tusk.errors import TuskError
from tusk.net.ssrf import AllowList, guarded_client, read_limited, send
from tusk.uploads import Uploader, save_upload
from tusk.workflow.files import file_value
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import Config, Node, NodeContext, NodeError, NodeResult, parse_config
from tusk.workflow.nodes.document_extractor import read_file
from tusk.workflow.template import references, render
from tusk.workflow.values import is_file
from tusk.workflow.variables import Selector, VariablePool

METHODS = frozenset({"get", "post", "put", "patch", "delete", "head", "options"})
# Dify's HTTP_REQUEST_MAX_*_TIMEOUT and HTTP_REQUEST_NODE_MAX_*_SIZE defaults.
MAX_CONNECT_TIMEOUT, MAX_READ_TIMEOUT, MAX_WRITE_TIMEOUT = 10.0, 600.0, 600.0
MAX_BINARY_SIZE = 10 * 1024 * 1024
MAX_TEXT_SIZE = 1024 * 1024
BODY_CONTENT_TYPES = {
    "json": "application/json",
    "x-www-form-urlencoded": "application/x-www-form-urlencoded",
    "raw-text": "text/plain",
}
TEXT_APPLICATION_TYPES = ("json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "graphql")
TEXT_MARKERS = (b"{", b"[", b"<", b"function", b"var ", b"const ", b"let ")


# --- configuration -----------------------------------------------------------------------------


class AuthConfig(Config):
    type: Literal["basic", "bearer", "custom"] = "bearer"
    api_key: str = ""
    header: str = ""


class Authorization(Config):
    type: Literal["no-auth", "api-key"] = "no-auth"
    config: AuthConfig | None = None


class BodyItem(Config):
    key: str = ""
    type: Literal["text", "file"] = "text"
    value: str = ""
    file: list[str] = []


class Body(Config):
    type: Literal["none", "form-data", "x-www-form-urlencoded", "raw-text", "json", "binary"]
    data: list[BodyItem] = []

    @field_validator("data", mode="before")
    @classmethod
    def _old_forms(cls, value: Any) -> Any:
        if not value:
            return []
        return [{"type": "text", "value": value}] if isinstance(value, str) else value


class Timeouts(Config):
    connect: float | None = None
    read: float | None = None
    write: float | None = None


class HttpRequestConfig(Config):
    method: str = "get"
    url: str = ""
    authorization: Authorization = Authorization()
    headers: str = ""
    params: str = ""
    body: Body | None = None
    timeout: Timeouts | None = None
    ssl_verify: bool | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value.lower() not in METHODS:
            raise ValueError(f"{value!r} is not an HTTP method; use one of {sorted(METHODS)}")
        return value.lower()


class HttpRequestError(NodeError):
    pass


class HttpStatusError(NodeError):
    @property
    def error_type(self) -> str:
        return "HTTPResponseCodeError"


# --- building the request (pure but for reading files) -----------------------------------------


def key_values(text: str) -> list[tuple[str, str]]:
    """Dify's "key:value" lines: blank lines and lines without a key are skipped; a line
    without ":" is a key with an empty value."""
    pairs = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip():
            pairs.append((key.strip(), value.strip()))
    return pairs


def auth_header(auth: Authorization, pool: VariablePool) -> tuple[str, str] | None:
    if auth.type == "no-auth":
        return None
    if auth.config is None:
        raise HttpRequestError("authorization is 'api-key' but has no configuration")
    key = render(auth.config.api_key, pool).strip()
    if not key:
        raise HttpRequestError("the API key of the authorization is empty")
    header = auth.config.header or "Authorization"
    if auth.config.type == "bearer":
        return header, f"Bearer {key}"
    if auth.config.type == "basic":
        encoded = base64.b64encode(key.encode()).decode() if ":" in key else key
        return header, f"Basic {encoded}"
    return (header, key) if auth.config.header else None


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != name.lower()}


@dataclass
class Outgoing:
    method: str
    url: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    content: bytes | str | None = None
    data: dict[str, str] | None = None
    json: Any = None
    files: list[tuple[str, tuple[str | None, bytes, str | None]]] = field(default_factory=list)

    def build(self, client: httpx.AsyncClient) -> httpx.Request:
        return client.build_request(
            self.method.upper(),
            self.url,
            params=tuple(self.params) or None,
            headers=encoded_headers(self.headers),
            content=self.content,
            data=self.data,
            json=self.json,
            files=self.files or None,
        )


def encoded_headers(headers: Mapping[str, str]) -> dict[bytes, bytes]:
    """Names must be ASCII; values go out as UTF-8, as browsers and curl send them."""
    bad = [name for name in headers if not name.isascii()]
    if bad:
        raise HttpRequestError(f"header names must be ASCII: {', '.join(bad)}")
    return {name.encode(): value.encode() for name, value in headers.items()}


def _one(items: list[BodyItem], kind: str) -> BodyItem:
    if len(items) != 1:
        raise HttpRequestError(f"a {kind} body has exactly one item, not {len(items)}")
    return items[0]


def _files_at(pool: VariablePool, selector: list[str]) -> list[Mapping[str, Any]]:
    value = pool.get(selector)
    if is_file(value):
        return [value]
    if isinstance(value, list) and all(is_file(item) for item in value):
        return value
    raise HttpRequestError(f"{'.'.join(selector) or '(no variable)'} is not a file")


async def _form_data(ctx: NodeContext, items: list[BodyItem], out: Outgoing) -> None:
    """Every part as multipart (text parts without a file name), so a form without files is
    still multipart/form-data, with its boundary."""
    for item in items:
        name = render(item.key, ctx.pool)
        if item.type == "text":
            out.files.append((name, (None, render(item.value, ctx.pool).encode(), None)))
            continue
        for file in _files_at(ctx.pool, item.file):
            data = await read_file(ctx, file)
            mime = file.get("mime_type") or "application/octet-stream"
            out.files.append((name, (str(file.get("filename") or "file"), data, mime)))
    out.headers = _without(out.headers, "content-type")


def _json_body(text: str) -> Any:
    try:
        return json.loads(text, strict=False)
    except ValueError as exc:
        raise HttpRequestError(f"the JSON body is not valid JSON ({exc}): {text[:200]}") from None


async def _body(ctx: NodeContext, body: Body, out: Outgoing) -> None:
    pool = ctx.pool
    match body.type:
        case "none":
            return
        case "raw-text":
            out.content = render(_one(body.data, body.type).value, pool)
        case "json":
            out.json = _json_body(render(_one(body.data, body.type).value, pool))
        case "binary":
            files = _files_at(pool, _one(body.data, body.type).file)
            out.content = await read_file(ctx, files[0])
        case "x-www-form-urlencoded":
            out.data = {render(i.key, pool): render(i.value, pool) for i in body.data}
        case "form-data":
            await _form_data(ctx, body.data, out)
    default_type = BODY_CONTENT_TYPES.get(body.type)
    if default_type and not any(k.lower() == "content-type" for k in out.headers):
        out.headers["Content-Type"] = default_type


async def outgoing(ctx: NodeContext, config: HttpRequestConfig) -> Outgoing:
    pool = ctx.pool
    url = render(config.url, pool).strip()
    if not url.startswith(("http://", "https://")):
        raise HttpRequestError(f"the URL must start with http:// or https://, not {url[:100]!r}")
    params = [(render(k, pool), render(v, pool)) for k, v in key_values(config.params)]
    headers = dict(key_values(render(config.headers, pool)))
    if auth := auth_header(config.authorization, pool):
        headers = {**_without(headers, auth[0]), auth[0]: auth[1]}
    out = Outgoing(config.method, url, params, headers)
    if config.body is not None:
        await _body(ctx, config.body, out)
    return out


def timeouts(config: Timeouts | None) -> httpx.Timeout:
    config = config or Timeouts()
    connect = min(config.connect or MAX_CONNECT_TIMEOUT, MAX_CONNECT_TIMEOUT)
    read = min(config.read or MAX_READ_TIMEOUT, MAX_READ_TIMEOUT)
    write = min(config.write or MAX_WRITE_TIMEOUT, MAX_WRITE_TIMEOUT)
    return httpx.Timeout(connect=connect, read=read, write=write, pool=connect)


def _body_log(request: httpx.Request, out: Outgoing) -> str:
    if out.files:
        return "\n".join(
            f"{name}={data.decode('utf-8', 'replace')}"
            if filename is None
            else f"{name}=<file {filename!r}, {len(data)} bytes>"
            for name, (filename, data, _) in out.files
        )
    if isinstance(out.content, bytes):
        return f"<binary, {len(out.content)} bytes>"
    return request.content.decode("utf-8", "replace")[:10_000]


def request_log(request: httpx.Request, out: Outgoing, secret_header: str | None) -> str:
    """The request as raw HTTP for the run's record, with the credential masked."""
    lines = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1"]
    for name, value in request.headers.items():
        masked = secret_header is not None and name.lower() == secret_header.lower()
        lines.append(f"{name}: {'*' * len(value) if masked else value}")
    return "\r\n".join(lines) + "\r\n\r\n" + _body_log(request, out)


# --- reading the response (pure) ---------------------------------------------------------------


def _disposition(headers: Mapping[str, str]) -> Message | None:
    value = headers.get("content-disposition", "")
    if not value:
        return None
    message = Message()
    message["content-disposition"] = value
    return message


def is_file_response(headers: Mapping[str, str], content: bytes) -> bool:
    """Dify's rules: an attachment, or binary media or application content, is a file."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    disposition = _disposition(headers)
    if disposition is not None and (
        disposition.get_content_disposition() == "attachment"
        or disposition.get_filename() is not None
    ):
        return True
    if content_type.startswith("text/"):
        return "csv" in content_type
    if content_type.startswith("application/"):
        if any(kind in content_type for kind in TEXT_APPLICATION_TYPES):
            return False
        sample = content[:1024]
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError:
            return True
        if any(marker in sample for marker in TEXT_MARKERS):
            return False
    main_type = content_type.split("/")[0]
    if main_type in ("application", "image", "audio", "video"):
        return mimetypes.guess_extension(content_type) is not None or main_type != "application"
    return False


def response_text(content: bytes, content_type: str) -> str:
    message = Message()
    message["content-type"] = content_type
    declared = message.get_param("charset")
    for encoding in (declared if isinstance(declared, str) else None, "utf-8"):
        if encoding:
            try:
                return content.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                pass
    best = charset_normalizer.from_bytes(content).best()
    return str(best) if best is not None else content.decode("utf-8", "replace")


def response_file_name(url: str, headers: Mapping[str, str], mime_type: str) -> str:
    disposition = _disposition(headers)
    name = (disposition.get_filename() if disposition else None) or ""
    name = name or PurePosixPath(urlsplit(url).path).name or "file"
    if not PurePosixPath(name).suffix:
        name += mimetypes.guess_extension(mime_type) or ""
    return name


def response_mime_type(name: str, headers: Mapping[str, str]) -> str:
    declared = headers.get("content-type", "").split(";")[0].strip()
    return mimetypes.guess_type(name)[0] or declared or "application/octet-stream"


# --- the node ----------------------------------------------------------------------------------


@dataclass
class Received:
    status_code: int
    headers: dict[str, str]
    content: bytes
    url: str


class HttpRequestNode(Node):
    type = "http-request"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(HttpRequestConfig, spec)

    def reads(self) -> Iterable[Selector]:
        config = self.config
        auth = config.authorization.config
        texts = [config.url, config.headers, config.params, auth.api_key if auth else ""]
        selectors: list[Selector] = [s for text in texts for s in references(text)]
        for item in config.body.data if config.body else []:
            selectors += references(item.key) + references(item.value)
            if item.file:
                selectors.append(item.file)
        return selectors

    def output_names(self) -> frozenset[str]:
        return frozenset({"status_code", "body", "headers", "files"})

    async def _exchange(self, ctx: NodeContext, out: Outgoing) -> tuple[Received, str]:
        allow = AllowList.from_settings(ctx.run.resources.settings)
        verify = self.config.ssl_verify is not False
        secret = self._secret_header()
        async with guarded_client(
            allow, timeout=timeouts(self.config.timeout), verify=verify
        ) as client:
            request = out.build(client)
            log = request_log(request, out, secret)
            response = await send(client, request)
            try:
                content = await read_limited(response, MAX_BINARY_SIZE, "response")
            finally:
                await response.aclose()
        received = Received(
            response.status_code, dict(response.headers), content, str(response.url)
        )
        return received, log

    def _secret_header(self) -> str | None:
        auth = self.config.authorization
        if auth.type != "api-key" or auth.config is None:
            return None
        return auth.config.header or "Authorization"

    async def _store(self, ctx: NodeContext, received: Received) -> dict[str, Any]:
        mime = received.headers.get("content-type", "").split(";")[0].strip()
        name = response_file_name(received.url, received.headers, mime)
        resources = ctx.run.resources
        uploader = Uploader(ctx.run.workspace_id, "end_user", None)
        async with resources.sessions.begin() as db:
            row = await save_upload(
                db,
                resources.storage,
                uploader,
                filename=name,
                mime_type=response_mime_type(name, received.headers),
                chunks=storage.iter_bytes(received.content),
                max_bytes=MAX_BINARY_SIZE,
            )
        return file_value(row, transfer_method="tool_file")

    async def run(self, ctx: NodeContext) -> NodeResult:
        out = await outgoing(ctx, self.config)
        try:
            received, log = await self._exchange(ctx, out)
        except httpx.TimeoutException as exc:
            raise HttpRequestError(
                f"the request to {out.url} timed out ({type(exc).__name__})"
            ) from None
        except (TuskError, httpx.HTTPError) as exc:
            raise HttpRequestError(f"the request to {out.url} failed: {exc}") from None
        process_data = {"request": log}
        if is_file_response(received.headers, received.content):
            files, body = [await self._store(ctx, received)], ""
        elif len(received.content) > MAX_TEXT_SIZE:
            raise HttpRequestError(
                f"the response text is {len(received.content)} bytes; the limit is "
                f"{MAX_TEXT_SIZE} bytes (1 MB)"
            )
        else:
            content_type = received.headers.get("content-type", "")
            files, body = [], response_text(received.content, content_type)
        if not 200 <= received.status_code < 300 and self._fails_on_status():
            raise HttpStatusError(f"Request failed with status code {received.status_code}")
        outputs = {
            "status_code": received.status_code,
            "body": body,
            "headers": received.headers,
            "files": files,
        }
        return NodeResult(outputs=outputs, process_data=process_data)

    def _fails_on_status(self) -> bool:
        """As in Dify: an error status fails the node only when it retries or has an error
        strategy, so that the failure branch or the retries can act on it."""
        return self.common.error_strategy is not None or self.common.retry_config.retry_enabled
