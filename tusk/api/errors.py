"""Every error leaves as Dify's body `{"code", "message", "status"}`: typed library errors with
their own code, bad input as 400 `invalid_param`, a lost database as 503, anything else as 500."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from tusk.errors import TuskError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Authentication is required."),
    403: ("forbidden", "You do not have permission to do this."),
    404: ("not_found", "The requested URL was not found on the server."),
    405: ("method_not_allowed", "The method is not allowed for the requested URL."),
    413: ("request_entity_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "The request's content type is not supported."),
}
DATABASE_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def error_body(code: str, message: str, status: int, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "status": status, **extra}


def error_response(
    code: str, message: str, status: int, *, params: str | None = None
) -> JSONResponse:
    body = error_body(code, message, status, **({"params": params} if params else {}))
    headers = {"WWW-Authenticate": 'Bearer realm="api"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    error = exc.errors()[0]
    if error.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    field = ".".join(loc) or None
    message = str(error.get("msg", "Invalid value"))
    return (f"{field}: {message}" if field else message), field


async def _tusk_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TuskError)
    return error_response(exc.code, exc.message, exc.status, params=exc.params)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, field = _describe_validation(exc)
    return error_response("invalid_param", message, 400, params=field)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code, default = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error."))
    code = getattr(exc, "code", code)  # errors of our own middleware carry their code
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else default
    if detail in ("Not Found", "Method Not Allowed"):
        detail = default
    return error_response(code, detail, exc.status_code)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return error_response("database_unavailable", "The database is unavailable; retry later.", 503)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response("unknown", "Internal Server Error", 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TuskError, _tusk_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, _database_error)
    app.add_exception_handler(Exception, _unexpected)
