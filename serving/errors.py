"""The gateway's narrow exceptions and the ONE place they become HTTP responses.

Every refusal names its cause; overload (rate limit, full queue, deadline, engine down, shutdown) always
carries Retry-After so clients back off instead of hammering, and nothing ever surfaces as a bare 500.
"""

from __future__ import annotations

import math

from starlette.responses import JSONResponse


class GatewayError(Exception):
    """Base of every refusal the gateway answers itself; `status` and `code` drive the HTTP response."""

    status: int = 500
    code: str = "internal"
    metric_status: str = "engine_error"  # the `status` label of infopt_requests_total
    retry_after: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(GatewayError):
    status, code, metric_status = 401, "unauthorized", "unauthorized"


class UnknownModel(GatewayError):
    status, code, metric_status = 404, "unknown_model", "bad_request"


class BadRequest(GatewayError):
    """Malformed or invalid input; `status` is 400 (syntax), 413 (too large) or 422 (well-formed, invalid)."""

    code, metric_status = "bad_request", "bad_request"

    def __init__(self, message: str, *, status: int = 400) -> None:
        if status not in (400, 413, 422):
            raise ValueError(f"BadRequest status {status} is not one of 400, 413, 422")
        super().__init__(message)
        self.status = status


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


class EngineUnavailable(_Overload):
    """The engine failed on the batch, is not loaded, has no healthy replica, or the gateway is draining."""

    status, code, metric_status = 503, "engine_unavailable", "engine_error"


class ShuttingDown(EngineUnavailable):
    code = "shutting_down"


def retry_after_header(seconds: float) -> str:
    """HTTP wants whole delta-seconds; round up so a client never retries too early."""
    return str(max(1, math.ceil(seconds)))


def error_response(error: GatewayError) -> JSONResponse:
    """The single mapping exception -> (status, JSON body, headers) used by every route."""
    headers = {}
    body: dict[str, object] = {"error": error.message, "code": error.code}
    if error.retry_after is not None:
        headers["Retry-After"] = retry_after_header(error.retry_after)
        body["retry_after_s"] = round(error.retry_after, 3)
    return JSONResponse(body, status_code=error.status, headers=headers)
