"""Typed errors of the library. The HTTP edge turns each into Dify's error body
`{"code": ..., "message": ..., "status": ...}`; nothing here knows about HTTP beyond the status."""

from __future__ import annotations


class TuskError(Exception):
    code = "unknown"
    status = 500

    def __init__(self, message: str, *, params: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.params = params


class InvalidParam(TuskError):
    code, status = "invalid_param", 400


class Unauthorized(TuskError):
    code, status = "unauthorized", 401


class AuthenticationFailed(TuskError):
    code, status = "authentication_failed", 401


class Forbidden(TuskError):
    code, status = "forbidden", 403


class NotFound(TuskError):
    code, status = "not_found", 404


class AlreadySetup(TuskError):
    code, status = "already_setup", 403


class NotSetup(TuskError):
    code, status = "not_setup", 401


class TooManyRequests(TuskError):
    code, status = "too_many_requests", 429


class LoginLocked(TuskError):
    code, status = "email_code_login_limit", 429


class FileTooLarge(TuskError):
    code, status = "file_too_large", 413


class RequestTooLarge(TuskError):
    code, status = "request_entity_too_large", 413


class DatabaseUnavailable(TuskError):
    code, status = "database_unavailable", 503


class MaxKeysExceeded(TuskError):
    code, status = "max_keys_exceeded", 400


class NoFileUploaded(TuskError):
    code, status = "no_file_uploaded", 400


class TooManyFiles(TuskError):
    code, status = "too_many_files", 400
