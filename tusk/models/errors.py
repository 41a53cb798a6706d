"""Typed errors of model calls. Each names the model and carries the provider's own message;
the HTTP edge maps them to Dify's error codes."""

from __future__ import annotations

from tusk.errors import TuskError


class ModelError(TuskError):
    code, status = "completion_request_error", 400
    retryable = False  # may the same call succeed if made again shortly?
    fallback = False  # may another model take this call over?

    def __init__(self, model: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{model}: {message}")
        self.model = model
        self.detail = message
        self.retry_after = retry_after


class UnknownModel(ModelError):
    code, status = "model_currently_not_support", 400


class MissingCredentials(ModelError):
    code, status = "provider_not_initialize", 400


class InvalidCredentials(ModelError):
    code, status = "provider_not_initialize", 400


class ContextTooLong(ModelError):
    code, status = "completion_request_error", 400


class BadRequest(ModelError):
    code, status = "completion_request_error", 400


class RateLimited(ModelError):
    code, status = "rate_limit_error", 429
    retryable = fallback = True


class ProviderUnavailable(ModelError):
    """Connection refused or reset, 5xx, overloaded: the provider, not the request, failed."""

    code, status = "completion_request_error", 502
    retryable = fallback = True


class ModelTimeout(ProviderUnavailable):
    code, status = "completion_request_error", 504


class BadResponse(ModelError):
    """The provider answered something that is not its protocol (garbage, a cut stream)."""

    code, status = "completion_request_error", 502
    fallback = True


def broken_stream(model: str, exc: BaseException) -> ModelError:
    """An error raised while reading a stream that had started: a read timeout (the SDKs pass
    their transport's timeout through unwrapped there), or a broken-off answer."""
    if any(cls.__name__ == "TimeoutException" for cls in type(exc).__mro__):
        return ModelTimeout(model, "the stream stalled past the read timeout")
    detail = " ".join(str(exc.__cause__ or exc).split()) or type(exc).__name__
    return BadResponse(model, f"the stream broke off: {detail}")


class ModelNotInstalled(ModelError):
    """A local model whose files (from PyPI packages) are not installed."""

    code, status = "model_currently_not_support", 400
