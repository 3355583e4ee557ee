"""The gateway's narrow exceptions and the ONE place they become HTTP responses.

Every refusal names its cause and carries a status, a machine-readable `code` and the `metric_status`
it is counted under in infopt_requests_total; overload (rate limit, full queue, deadline, engine down,
shutdown, connection limit) always carries Retry-After so clients back off instead of hammering. Anything
that is not a GatewayError becomes `InternalError` (500, JSON, logged once with its traceback): nothing
surfaces as a bare 500, and nothing is counted "ok" that was not answered 200.
"""

from __future__ import annotations

import math

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    """Base of every refusal the gateway answers itself; `status` and `code` drive the HTTP response."""

    status: int = 500
    code: str = "internal"
    metric_status: str = "internal_error"  # the `status` label of infopt_requests_total
    retry_after: float | None = None
    close_connection: bool = False  # the request's bytes cannot be trusted further (timeouts, limits)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InternalError(GatewayError):
    """A bug or an unexpected failure: 500, logged with its traceback where it was caught."""


class Unauthorized(GatewayError):
    status, code, metric_status = 401, "unauthorized", "unauthorized"


class NotFound(GatewayError):
    status, code, metric_status = 404, "not_found", "bad_request"


class UnknownModel(NotFound):
    code = "unknown_model"


class MethodNotAllowed(GatewayError):
    status, code, metric_status = 405, "method_not_allowed", "bad_request"

    def __init__(self, message: str, *, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allowed = allowed


class UnsupportedMediaType(GatewayError):
    status, code, metric_status = 415, "unsupported_media_type", "bad_request"


class BadRequest(GatewayError):
    """Malformed or invalid input; `status` is 400 (syntax), 413 (too large) or 422 (well-formed, invalid)."""

    code, metric_status = "bad_request", "bad_request"

    def __init__(self, message: str, *, status: int = 400, code: str | None = None) -> None:
        if status not in (400, 413, 422):
            raise ValueError(f"BadRequest status {status} is not one of 400, 413, 422")
        super().__init__(message)
        self.status = status
        self.code = code or ("too_large" if status == 413 else "bad_request")


class HeaderTooLarge(GatewayError):
    """Request line + headers over serving.max_header_bytes, or more than max_header_count fields."""

    status, code, metric_status = 431, "header_too_large", "bad_request"
    close_connection = True


class RequestTimeout(GatewayError):
    """Headers or body not received within serving.header_timeout_s / body_timeout_s."""

    status, metric_status = 408, "timeout"
    close_connection = True

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class ClientDisconnected(GatewayError):
    """The client went away before its answer was written; nothing can be sent (nginx's 499)."""

    status, code, metric_status = 499, "client_disconnected", "client_disconnected"


class _Overload(GatewayError):
    """A refusal the client should retry later; Retry-After is mandatory."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(_Overload):
    status, code, metric_status = 429, "rate_limited", "rate_limited"


class QueueFull(_Overload):
    status, code, metric_status = 503, "queue_full", "queue_full"


class DeadlineExceeded(_Overload):
    status, code, metric_status = 503, "deadline_exceeded", "deadline_exceeded"


class TooManyConnections(_Overload):
    """More than serving.max_connections open connections in this process."""

    status, code, metric_status = 503, "too_many_connections", "overloaded"
    close_connection = True


class EngineUnavailable(_Overload):
    """The engine failed on the batch (or returned invalid output), is not loaded, or has no healthy replica."""

    status, code, metric_status = 503, "engine_unavailable", "engine_error"


class ShuttingDown(EngineUnavailable):
    code, metric_status = "shutting_down", "shutting_down"


def retry_after_header(seconds: float) -> str:
    """HTTP wants whole delta-seconds; round up so a client never retries too early."""
    return str(max(1, math.ceil(seconds)))


def error_body(error: GatewayError) -> bytes:
    body: dict[str, object] = {"error": error.message, "code": error.code}
    if error.retry_after is not None:
        body["retry_after_s"] = round(error.retry_after, 3)
    return orjson.dumps(body)


def error_headers(error: GatewayError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = retry_after_header(error.retry_after)
    if isinstance(error, MethodNotAllowed) and error.allowed:
        headers["Allow"] = ", ".join(error.allowed)
    if error.close_connection:
        headers["Connection"] = "close"
    return headers


def error_response(error: GatewayError) -> Response:
    """The single mapping exception -> (status, JSON body, headers) used by every route."""
    return Response(
        error_body(error), status_code=error.status, headers=error_headers(error), media_type="application/json"
    )
